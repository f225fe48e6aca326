"""Build hook: compiles the Cython extensions during a normal `pip install`: the batch
verifier (crypto/_verify.pyx) and the usual tx's decoder (node/_txfast.pyx).

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
    ),
    Extension(
        "node._txfast",
        sources=["node/_txfast.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3))
