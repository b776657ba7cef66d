"""The caption policy (which caption becomes KEY.txt, all kept) and the config's errors."""

import json

import pyarrow as pa
import pytest
from pydantic import ValidationError

from curate import records
from curate.caption import CaptionConfig, Captioner, DecodingOptions

COCA = {"captioner": {"model": {"model": "cleanroom-tiny-coca"}}}
MODEL_NAME = "open_clip:cleanroom-tiny-coca/random-init"


def table_with_model_captions(*model_texts):
    """Pending records as the model stage leaves them: a model caption each (None: the model wrote nothing)."""
    rows = [records.candidate("met", str(i), title="Sunflowers", creator="Vincent van Gogh", date="1888")
            for i in range(len(model_texts))]
    captions = [json.dumps([{"text": t, "origin": "model", "model": MODEL_NAME}]) if t else None
                for t in model_texts]
    return with_captions(records.to_table(rows), captions)


def with_captions(table, values):
    """``table`` with these ``captions`` (whether or not records.SCHEMA has the column yet)."""
    array = pa.array(values, pa.string())
    if "captions" in table.column_names:
        return table.set_column(table.schema.get_field_index("captions"), "captions", array)
    return table.append_column("captions", array)


@pytest.mark.parametrize("choose, caption, origin", [
    (["metadata"], "Sunflowers, by Vincent van Gogh, 1888", "metadata"),
    (["model"], "a vase of yellow flowers", "model"),
    (["combined"], "a vase of yellow flowers, by Vincent van Gogh, 1888", "combined"),
])
def test_choose_sets_the_txt_caption_and_keeps_every_caption(choose, caption, origin):
    [row] = Captioner(CaptionConfig(choose=choose, **COCA))(table_with_model_captions("a vase of yellow flowers"))\
        .to_pylist()
    assert (row["caption"], row["caption_origin"]) == (caption, origin)
    entries = json.loads(row["captions"])
    assert {e["origin"] for e in entries} == {"model", "metadata"} | ({"combined"} if "combined" in choose else set())
    assert {"text": "a vase of yellow flowers", "origin": "model", "model": MODEL_NAME} in entries


def test_choose_falls_back_in_order_when_a_record_lacks_a_caption():
    config = CaptionConfig(choose=["combined", "metadata"], **COCA)
    out = Captioner(config)(table_with_model_captions("a vase of yellow flowers", None)).to_pylist()
    assert [r["caption_origin"] for r in out] == ["combined", "metadata"]


def test_the_caption_stage_is_idempotent_and_leaves_decided_records_alone():
    config = CaptionConfig(choose=["combined", "metadata"], **COCA)
    table = table_with_model_captions("a vase of yellow flowers")
    decided = records.finish(records.candidate("met", "x", title="Irises"), records.REJECTED, "watermark")
    table = pa.concat_tables([table, with_captions(records.to_table([decided]), [None])])
    once = Captioner(config)(table)
    twice = Captioner(config)(once)
    assert once.equals(twice)
    assert once.to_pylist()[1]["caption"] is None and once.to_pylist()[1]["captions"] is None


def test_caption_stage_fills_a_typed_captions_column():
    out = Captioner(CaptionConfig())(records.to_table([records.candidate("met", "1", title="Irises")]))
    assert out.schema.field("captions").type == pa.string()
    assert json.loads(out["captions"][0].as_py()) == [{"text": "Irises", "origin": "metadata"}]


@pytest.mark.parametrize("data, message", [
    ({"choose": ["model"]}, "choose names model but no captioner"),
    ({"choose": ["metadata", "metadata"]}, "appears twice"),
    ({"choose": ["combined"], "combined_template": "[{model}, ]by {creator}", **COCA}, "must contain {model}"),
    ({"max_chars": 5}, "greater than or equal to 20"),
    ({"captioner": {"model": {"model": "coca_ViT-B-32"}, "decoding": {"top_p": 0.9}}},
     "top_p: not used by generation_type beam_search"),
    ({"captioner": {"model": {"model": "coca_ViT-B-32"}, "decoding": {"num_beams": 4, "num_beam_groups": 3}}},
     "multiple of num_beam_groups"),
    ({"captioner": {"model": {"model": "coca_ViT-B-32"}, "decoding": {"seq_len": 5, "min_seq_len": 5}}},
     "larger than min_seq_len"),
    ({"captioner": {"model": {"model": "coca_ViT-B-32"}, "decoding": {"generation_type": "top_k", "num_beams": 4}}},
     "num_beams: not used by generation_type top_k"),
    ({"metadata": {"sources": {"met": {"templates": ["{title}[, by {creator}"]}}}}, "must be \\[...\\] pairs"),
    ({"metadata": {"sources": {"met": {"templates": ["by nobody"]}}}}, "names no {field}"),
    ({"metadata": {"placeholder_patterns": ["(unclosed"]}}, "placeholder pattern"),
    ({"metadata": {"languages": ["en"], "langauges": ["fi"]}}, "Extra inputs are not permitted"),
])
def test_config_errors_say_what_is_wrong(data, message):
    with pytest.raises(ValidationError, match=message):
        CaptionConfig.model_validate(data)


def test_decoding_options_become_generate_arguments():
    assert DecodingOptions().generate_kwargs() == {
        "generation_type": "beam_search", "seq_len": 30, "min_seq_len": 5, "repetition_penalty": 1.0,
        "num_beams": 6, "num_beam_groups": 3}
    sampling = DecodingOptions(generation_type="top_p", top_p=0.9, temperature=0.7, seed=3)
    assert sampling.generate_kwargs() == {
        "generation_type": "top_p", "seq_len": 30, "min_seq_len": 5, "repetition_penalty": 1.0,
        "top_p": 0.9, "temperature": 0.7, "max_seq_len": 77}
