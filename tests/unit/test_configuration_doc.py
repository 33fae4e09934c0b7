"""docs/configuration.md lists exactly the settings the services read."""

from __future__ import annotations

from scripts import config_doc


def test_configuration_doc_matches_the_settings_classes() -> None:
    assert config_doc.main(["--check"]) == 0, "docs/configuration.md is stale: run `make docs`"


def test_every_setting_is_described() -> None:
    for _service, cls in config_doc._services():
        missing = [n for n, f in cls.model_fields.items() if not f.description]
        assert missing == [], f"{cls.__name__} fields without a description: {missing}"
