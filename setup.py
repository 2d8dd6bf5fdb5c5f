"""ev-predict: PAI EasyVision offline image classification on Apache Beam."""
import setuptools

_FOLDERS = {'ev_predict.pipeline': 'pipeline',
            'ev_predict.transforms': 'transforms',
            'ev_predict.templates': 'templates'}

setuptools.setup(
    name='ev-predict',
    version='0.1.0',
    description='PAI EasyVision ev_predict_ext (classifier) on Apache Beam',
    python_requires='>=3.10',
    # The design card's folders, installed under one name of our own: PyPI
    # has packages called "pipeline" and "transforms", and any pipeline.py on
    # sys.path would shadow a top-level one. Their sub-packages
    # (transforms/oss) are found, so a new one needs no entry here.
    packages=[f'{name}{sub}' for name, folder in _FOLDERS.items()
              for sub in ['', *(f'.{p}' for p in
                                setuptools.find_packages(folder))]],
    package_dir=_FOLDERS,
    package_data={'ev_predict.templates': ['*.yaml']},
    install_requires=[
        'apache-beam==2.77.0',
        'tensorflow>=2.16,<2.22',
        'pillow>=10',
        'numpy',
        'oss2>=2.18',
        'alibabacloud-credentials>=1.0',
        'openvino>=2025.0',
        'urllib3>=2',
        # Result lines: the scores' reprs at C speed (transforms/format.py).
        'orjson>=3.10',
        # The launcher's live bar on a terminal (pipeline/status.py).
        'rich>=13',
        # The run report's charts, drawn to inline SVG (transforms/
        # report_page.py); imported only when a report is written.
        'matplotlib>=3.8',
    ],
    extras_require={
        # websocket-client: the DevTools protocol of the headless Chromium
        # the report is checked in (tests/browser.py).
        'test': ['pytest>=8', 'pytest-timeout', 'scikit-learn',
                 'websocket-client>=1.6'],
        # The benchmark's corpus is made from scikit-image's sample photos.
        'bench': ['scikit-image'],
    },
    entry_points={'console_scripts': ['ev-predict=ev_predict.pipeline.cli:main']},
)
