"""Release hygiene: the license the metadata declares is shipped (the wheel's check is in .ci/wheel_check)."""

import configparser

import pytest

from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow  # builds the package

ROOT = REPO_ROOT


def test_license_file_is_the_mit_text_with_the_contributors_as_holder():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c)" in text and "lightning-synflow contributors" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_license_is_declared_for_the_wheel_and_the_sdist():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    assert config["metadata"]["license"] == "MIT"
    assert config["metadata"]["license_files"].split() == ["LICENSE"]  # into the wheel's .dist-info
    manifest = (ROOT / "MANIFEST.in").read_text().split()
    assert "LICENSE" in manifest  # into the sdist
