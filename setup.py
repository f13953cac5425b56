from setuptools import find_packages, setup

setup(
    name="pagewho",
    version="0.1.0",
    description="Who owns this page frame? Page ownership for Linux kernel memory images.",
    packages=find_packages(include=["pagewho", "pagewho.*"]),
    python_requires=">=3.8",
    extras_require={
        "drgn": ["drgn>=0.0.30"],
        "table": ["tabulate"],
        "map": ["matplotlib"],
        "test": ["drgn>=0.0.30", "pytest", "hypothesis", "ruff", "tabulate"],
    },
    entry_points={
        "console_scripts": ["pagewho = pagewho.cli:main"],
        "drgn.plugins": ["pagewho = pagewho.drgn_plugin"],
    },
)
