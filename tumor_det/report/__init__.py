"""One self-contained HTML page per run: ``report.html`` beside what an evaluation,
cross-validation, per-case 3D evaluation or splash run wrote.

:func:`~tumor_det.report.build.write_report` finds what the run wrote (:mod:`.detect`), reads it
back (:mod:`.runinfo`, :mod:`.curves`), draws the plots (:mod:`.plots`) and key slices
(:mod:`.thumbnails`), lays out the sections of its kind (:mod:`.sections`) and writes the page
(:mod:`.html`) atomically. Everything is inline (PNG data URIs, CSS, a few lines of JavaScript):
the page opens from a USB stick and fetches nothing.
"""
