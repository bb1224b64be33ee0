"""Install tumor_det (``pip install -e .``); versions are pinned in constraints.txt."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="tumor-det",
    version="0.1.0",
    description="Brain tumor detection and segmentation in MRI with Detectron2 Mask R-CNN",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # configs/ is shipped as the package-data module tumor_det.configs (found by name at run time
    # through tumor_det.config.config.get_config_file, in site-packages as in an editable install).
    packages=[*find_packages(include=["tumor_det", "tumor_det.*"]), "tumor_det.configs"],
    package_dir={"tumor_det.configs": "configs"},
    # lazy/*.py: the LazyConfig twins (tumor_det.config.lazy, found as "lazy/<name>.py")
    package_data={"tumor_det.configs": ["*.yaml", "lazy/*.py"]},
    install_requires=[
        # Detectron2 is built from PyPI's pb1-detectron2 sdist by tools/build_detectron2_wheel.py.
        "detectron2",
        "torch",
        "torchvision",
        "numpy",
        "pillow>=10.3",
        "opencv-python-headless",
        "pycocotools",
        "h5py",
        "nibabel",
        "pydicom",
        # pydicom's decoders for compressed DICOM, permissive licences only: JPEG 2000
        # (pylibjpeg-openjpeg, MIT), JPEG-LS (pyjpegls, MIT), JPEG baseline/lossless and
        # JPEG 2000 (python-gdcm, BSD); 12-bit JPEG extended needs the "dicom-gpl" extra.
        "pylibjpeg",
        "pylibjpeg-openjpeg",
        "pyjpegls",
        "python-gdcm",
        "highdicom",
        "shapely",
        "scipy",
        "scikit-learn",
        "monai",
        "tqdm",
        "tabulate",
        # imported by tumor_det itself (until now they came only through the Detectron2
        # wheel): fvcore (transforms, LR schedules), iopath (download cache), hydra-core and
        # omegaconf (LazyConfig and its key=value overrides), PyYAML (LazyConfig-saved
        # config.yaml), tensorboard (the trainers' TensorBoard events)
        "fvcore",
        "iopath",
        "hydra-core",
        "omegaconf",
        "pyyaml",
        "tensorboard",
    ],
    # the command-line tools as console scripts (nnU-Net's nnUNetv2_* way): each is the main()
    # that tools/<tool>.py calls
    entry_points={
        "console_scripts": [
            "tumor-det-train = tumor_det.cli.train_net:launch_main",
            "tumor-det-lazyconfig-train = tumor_det.cli.lazyconfig_train_net:launch_main",
            "tumor-det-splash = tumor_det.cli.splash:main",
            "tumor-det-export = tumor_det.cli.export_model:main",
            "tumor-det-evaluate = tumor_det.cli.evaluate:main",
            "tumor-det-cross-validate = tumor_det.cli.cross_validate:main",
            "tumor-det-prepare = tumor_det.cli.prepare_dataset:main",
            "tumor-det-demo = tumor_det.cli.demo:main",
            "tumor-det-visualize = tumor_det.cli.visualize_data:main",
        ],
    },
    extras_require={
        # pylibjpeg-libjpeg (GPL-3.0): the only PyPI decoder of 12-bit JPEG extended that
        # pydicom can use; opt-in because of its licence (make installs it: the README set-up)
        "dicom-gpl": ["pylibjpeg-libjpeg"],
        # ONNX export (tools/export_model.py --format onnx) and the onnxruntime backend of
        # TumorPredictor/splash; the torch and torchscript backends need neither
        "export": ["onnx", "onnxruntime"],
        # Ray Data: tools/splash.py --ray (actors over a cluster); imported only when used
        "ray": ["ray[data]"],
        "dev": ["pytest", "hypothesis", "ruff", "onnx", "onnxruntime", "ray[data]"],
    },
)
