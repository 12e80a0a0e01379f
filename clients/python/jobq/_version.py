"""The version of the jobq Python package: the project's version (CMake's
project(VERSION), debian/changelog), checked equal by the tests."""

__version__ = "0.1.0"
