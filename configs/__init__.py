"""tumor-det's YAML configs, installed as the package-data module ``tumor_det.configs``.

``setup.py`` maps this folder to ``tumor_det.configs`` so that ``pip install .`` ships the configs
and :func:`tumor_det.config.config.get_config_file` finds them by name outside the repository.
"""
