"""The batch line model is the request models' fields plus ``id`` and ``image``."""

from __future__ import annotations

import dataclasses

from mai_tools._models import FIELDS_OF
from mai_tools.batch import BatchItem
from mai_tools.batch._input import _LineModel, item_from_mapping, parse_lines

CHOSEN = {name for fields in FIELDS_OF.values() for name in fields.model_fields}


def test_the_line_model_is_the_request_fields_plus_id_and_image() -> None:
    assert set(_LineModel.model_fields) == CHOSEN | {"id", "image"}
    assert {f.name for f in dataclasses.fields(BatchItem)} == CHOSEN | {"id", "image", "line"}


def test_defaults_are_the_request_models_defaults() -> None:
    item = item_from_mapping({"prompt": "a quiet harbour"}, 1)
    assert isinstance(item, BatchItem)
    for fields in FIELDS_OF.values():
        for name, info in fields.model_fields.items():
            if not info.is_required():
                assert getattr(item, name) == info.default, name


def test_an_unknown_key_names_every_allowed_key() -> None:
    (line,) = parse_lines('{"prompt": "a typo", "aspect": "16:9"}\n', name="in.jsonl")
    assert not isinstance(line, BatchItem)
    assert line.reason == (
        "unknown field 'aspect' (allowed: id, prompt, image, num_images, aspect_ratio, "
        "output_format)"
    )
