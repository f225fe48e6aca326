"""Build hook: compiles the Cython batch verifier during a normal `pip install`.

libsodium comes from PyNaCl's bundled shared object at import time (see
crypto/_verify.pyx), so the build needs no system package and no headers beyond
Python's own.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "crypto._verify",
        sources=["crypto/_verify.pyx"],
        extra_compile_args=["-O3"],
        libraries=["dl", "pthread"],
    )
]

setup(ext_modules=cythonize(extensions, language_level=3))
