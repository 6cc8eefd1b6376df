"""Tokenizer round trips on the goldens; tiny policies save and load as HF directories."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from searchrl.models import fix_chat_template_trim, load_policy, num_params, prompt_for
from searchrl.tasks.countdown import build_countdown_tokenizer

DATA = Path(__file__).parent / "data"


def _traces() -> list[str]:
    out = []
    with gzip.open(DATA / "countdown_problems.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            p = json.loads(line)
            out += list(p["traces"].values()) + [p["optimal_path"]]
    with gzip.open(DATA / "countdown_grades.jsonl.gz", "rt", encoding="utf-8") as f:
        out += [json.loads(line)["trace"] for line in f]
    return out


TRACES = _traces()


@pytest.mark.parametrize("digits", [0, 2, 3])
def test_round_trip_on_every_golden_trace(digits):
    tok = build_countdown_tokenizer(digits)
    for t in TRACES:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == t


def test_phrases_are_single_tokens_and_sizes():
    tok = build_countdown_tokenizer(0)
    assert len(tok) <= 120
    pieces = tok.convert_ids_to_tokens(tok("Current State: 42:[86, 43], Operations: []\n",
                                           add_special_tokens=False)["input_ids"])
    assert pieces[0] == "Current State: " and ", Operations: " in pieces and pieces[-1] == "\n"
    assert "4" in pieces and "42" not in pieces
    whole = build_countdown_tokenizer(2)
    pieces = whole.convert_ids_to_tokens(whole("12+345=357\n", add_special_tokens=False)["input_ids"])
    assert pieces == ["12", "+", "3", "4", "5", "=", "3", "5", "7", "\n"]   # > 2 digits fall back to digits
    lengths = sorted(len(tok(t, add_special_tokens=False)["input_ids"]) for t in TRACES[:600])
    assert 150 < lengths[len(lengths) // 2] < 400


def test_chat_template_and_continuation_prefix_tokenize_consistently():
    tok = build_countdown_tokenizer(0)
    prompt = prompt_for(tok, "42:[86, 43, 44]")
    assert prompt.startswith(tok.bos_token) and prompt.endswith("<|assistant|>")
    prefix = "Current State: 42:[86, 43, 44], Operations: []\n"
    joint = tok(prompt + prefix, add_special_tokens=False)["input_ids"]
    split = tok(prompt, add_special_tokens=False)["input_ids"] + tok(prefix, add_special_tokens=False)["input_ids"]
    assert joint == split
    full = tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                   tokenize=False)
    assert full.endswith("y" + tok.eos_token)


def test_fix_chat_template_trim():
    class T:
        chat_template = "{{ message['content'] | trim }}{{ x|trim }}"
    t = T()
    assert fix_chat_template_trim(t) and "trim" not in t.chat_template
    assert not fix_chat_template_trim(t)


def test_presets_save_and_load_as_hf_directories(tmp_path):
    model, tok = load_policy("micro", build_countdown_tokenizer(0), max_seq_len=128)
    assert 10_000 < num_params(model) < 50_000
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model2, tok2 = load_policy(tmp_path)
    assert tok2.chat_template == tok.chat_template and len(tok2) == len(tok)
    x = torch.tensor([tok("Exited\n", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(x).logits, model2(x).logits)


def test_unknown_policy_name_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a model directory"):
        load_policy(tmp_path / "nope")


def test_pretrained_directory_with_a_trimming_chat_template(tmp_path):
    """A local model whose chat template trims messages (as Llama-3.x's does) loads with the
    trim removed, so a continuation prefix ending in a newline survives the template."""
    model, tok = load_policy("micro", build_countdown_tokenizer(0), max_seq_len=128)
    tok.chat_template = ("{% for m in messages %}<|user|>{{ m['content'] | trim }}{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    _, tok2 = load_policy(tmp_path)
    assert "trim" not in tok2.chat_template
    text = tok2.apply_chat_template([{"role": "user", "content": "42:[1, 2]\n"}], tokenize=False)
    assert text.endswith("42:[1, 2]\n")
