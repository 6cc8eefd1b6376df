"""Off-the-shelf verifiers as search scorers (searchrl.models.verifiers), on tiny models built here: a
token-classification PRM read at step separators (Math-Shepherd and Qwen2.5-Math-PRM conventions), a causal LM
read as Math-Shepherd's PRM, a *ForProcessRewardModel, a sequence-classification ORM; the value model's export as
a *ForTokenClassification directory; and searches scoring with them."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import (AutoModelForTokenClassification, LlamaConfig, LlamaForCausalLM,
                          LlamaForSequenceClassification, LlamaForTokenClassification, LlamaModel)

from searchrl.config import VERIFIER_AGGREGATES, VERIFIER_CONVENTIONS, ConfigError, load_config
from searchrl.data import InputError
from searchrl.models import load_policy, prompt_for
from searchrl.models.policy import dir_tokenizer, resolve_model_path
from searchrl.models.value import ValueModel
from searchrl.models.verifiers import (AGGREGATES, CONVENTIONS, SequenceClassificationRM, TextView,
                                       TokenClassificationPRM, load_scorer)
from searchrl.tasks.vocab import build_phrase_tokenizer

QUESTION = "Make 24 from 3 4 8."
STATE = "3 + 4 = 7\n7 * 8 = 56\n\n56 - 32 = 24\n"  # three steps and a blank line


@pytest.fixture(scope="module")
def policy_tok():
    """The policy's tokenizer (the shipped Countdown policy's): searches hand verifiers ids in its vocabulary."""
    return dir_tokenizer(resolve_model_path("builtin:sos-tiny-base"))


@pytest.fixture(scope="module")
def vtok():
    """A verifier's own vocabulary (another one than the policy's), with both conventions' separators."""
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    return build_phrase_tokenizer(["ки", "<extra_0>", " -"], chars)


def llama(vtok, seed: int, **kw) -> LlamaConfig:
    torch.manual_seed(seed)
    return LlamaConfig(vocab_size=len(vtok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                       pad_token_id=vtok.pad_token_id, bos_token_id=vtok.bos_token_id, eos_token_id=vtok.eos_token_id,
                       **kw)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, vtok):
    """Verifier directories written by save_pretrained: token classification (2 labels, 1 label), sequence
    classification (1 label, 2 labels), a causal LM, and a *ForProcessRewardModel (backbone + score MLP)."""
    root = tmp_path_factory.mktemp("verifiers")
    out = {}
    for name, cls, seed, kw in (("prm", LlamaForTokenClassification, 1, {"num_labels": 2}),
                                ("prm1", LlamaForTokenClassification, 2, {"num_labels": 1}),
                                ("orm", LlamaForSequenceClassification, 3, {"num_labels": 1}),
                                ("orm2", LlamaForSequenceClassification, 4, {"num_labels": 2}),
                                ("shepherd", LlamaForCausalLM, 5, {})):
        model = cls(llama(vtok, seed, **kw))
        with torch.no_grad():  # visible differences between classes and positions
            for p in model.parameters():
                p.mul_(4.0) if p.dim() == 2 else None
        model.save_pretrained(root / name)
        vtok.save_pretrained(root / name)
        out[name] = root / name
    backbone = LlamaModel(llama(vtok, 6))
    torch.manual_seed(7)
    head = torch.nn.Sequential(torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    qwen = root / "qwen-prm"
    qwen.mkdir()
    state = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    state.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    save_file(state, str(qwen / "model.safetensors"), metadata={"format": "pt"})
    cfg = backbone.config.to_dict()
    cfg["architectures"] = ["LlamaForProcessRewardModel"]
    (qwen / "config.json").write_text(json.dumps(cfg))
    vtok.save_pretrained(qwen)
    out["qwen-prm"] = qwen
    out["_qwen"] = (backbone, head)
    return out


def ids_of(policy_tok, question=QUESTION, state=STATE):
    prompt = policy_tok(prompt_for(policy_tok, question), add_special_tokens=False)["input_ids"]
    return list(prompt), list(policy_tok(state, add_special_tokens=False)["input_ids"])


def at_token(vtok, text: str, token: str, add_special_tokens: bool):
    ids = vtok(text, add_special_tokens=add_special_tokens)["input_ids"]
    sep = vtok.convert_tokens_to_ids(token)
    return torch.tensor([ids]), [i for i, t in enumerate(ids) if t == sep]


def test_settings_and_conventions_agree():
    assert set(VERIFIER_CONVENTIONS) == set(CONVENTIONS) and VERIFIER_AGGREGATES == AGGREGATES
    with pytest.raises(ConfigError, match="search.verifier.aggregate = 'mean': must be one of min | last | prod"):
        load_config([], ["search.verifier.aggregate=mean"])
    with pytest.raises(ConfigError, match="search.verifier.convention = 'prm800k'"):
        load_config([], ["search.verifier.convention=prm800k"])


def test_the_view_reads_the_question_and_the_steps_of_policy_ids(policy_tok):
    prompt, state = ids_of(policy_tok)
    view = TextView(policy_tok, "\n")
    assert view.question(prompt) == QUESTION
    assert view.steps(state) == ["3 + 4 = 7", "7 * 8 = 56", "56 - 32 = 24"]
    cut = view.steps(state[:-3])  # an unfinished last action is a step
    assert cut[:2] == ["3 + 4 = 7", "7 * 8 = 56"] and "56 - 32 = 24".startswith(cut[2]) and cut[2] != "56 - 32 = 24"


def test_math_shepherd_token_classification_prm_is_read_at_each_separator(dirs, vtok, policy_tok):
    prompt, state = ids_of(policy_tok)
    prm = load_scorer(dirs["prm"], tokenizer=policy_tok)
    assert isinstance(prm, TokenClassificationPRM) and prm.positive == 1  # 2 unnamed labels: class 1
    # by hand: the Math-Shepherd text, the softmax's class 1 at every "ки"
    ids, at = at_token(vtok, f"{QUESTION} 3 + 4 = 7 ки\n7 * 8 = 56 ки\n56 - 32 = 24 ки", "ки", True)
    model = LlamaForTokenClassification.from_pretrained(dirs["prm"])
    with torch.no_grad():
        steps = torch.softmax(model(ids).logits[0, at], -1)[:, 1]
    assert len(at) == 3 and len(set(steps.tolist())) == 3
    got = prm.score([prompt], [state])[0]
    assert got == pytest.approx(float(steps.min()), abs=1e-6)
    prm.aggregate = "last"
    assert prm.score([prompt], [state])[0] == pytest.approx(float(steps[-1]), abs=1e-6)
    prm.aggregate = "prod"
    assert prm.score([prompt], [state])[0] == pytest.approx(float(steps.prod()), abs=1e-6)
    # a state with no step yet: one empty step, read at a separator right after the question
    ids, at = at_token(vtok, f"{QUESTION} ки", "ки", True)
    with torch.no_grad():
        empty = float(torch.softmax(model(ids).logits[0, at[-1]], -1)[1])
    assert prm.score([prompt], [[]])[0] == pytest.approx(empty, abs=1e-6)
    # batched with other states (padding) the values stay
    prm.aggregate = "min"
    other = ids_of(policy_tok, "Make 10 from 2 5.", "2 * 5 = 10\n")
    both = prm.score([other[0], prompt], [other[1], state])
    assert both[1] == pytest.approx(got, abs=1e-5)


def test_one_pass_gives_every_prefix_value_as_scoring_it_alone(dirs, policy_tok):
    prompt, state = ids_of(policy_tok)
    prm = load_scorer(dirs["prm"], tokenizer=policy_tok, aggregate="min")
    view = TextView(policy_tok)
    ends = [0, *[e for e, _ in view.segments(state)], 3]  # every action end, and a cut inside the first action
    got = prm.values_at([prompt], [state], [ends])[0]
    alone = [prm.score([prompt], [state[:e]])[0] for e in ends]
    assert got == pytest.approx(alone, abs=1e-5)
    from searchrl.search.common import ActionSplitter
    from searchrl.search.vm_mcts import prm_min_scores

    assert prm_min_scores(prm, ActionSplitter(policy_tok), [prompt], [state])[0] == pytest.approx(min(alone[1:-1]),
                                                                                                  abs=1e-5)


def test_one_label_head_is_read_through_a_sigmoid_and_label_names_are_checked(dirs, vtok, policy_tok):
    prompt, state = ids_of(policy_tok)
    prm = load_scorer(dirs["prm1"], tokenizer=policy_tok, aggregate="last")
    ids, at = at_token(vtok, f"{QUESTION} 3 + 4 = 7 ки\n7 * 8 = 56 ки\n56 - 32 = 24 ки", "ки", True)
    with torch.no_grad():
        last = float(torch.sigmoid(LlamaForTokenClassification.from_pretrained(dirs["prm1"])(ids).logits[0, at[-1], 0]))
    assert prm.score([prompt], [state])[0] == pytest.approx(last, abs=1e-6)
    with pytest.raises(InputError, match="positive_label = 'good': not a label of this model"):
        load_scorer(dirs["prm"], tokenizer=policy_tok, positive_label="good")
    assert load_scorer(dirs["prm"], tokenizer=policy_tok, positive_label="LABEL_0").positive == 0
    with pytest.raises(InputError, match="class 5 outside"):
        load_scorer(dirs["prm"], tokenizer=policy_tok, positive_label="5")


def test_qwen_prm_convention_reads_the_chat_template_at_extra_0(dirs, vtok, policy_tok):
    prompt, state = ids_of(policy_tok)
    prm = load_scorer(dirs["prm"], tokenizer=policy_tok, convention="qwen-prm")
    text = vtok.apply_chat_template([{"role": "user", "content": QUESTION}, {
        "role": "assistant", "content": "3 + 4 = 7<extra_0>7 * 8 = 56<extra_0>56 - 32 = 24<extra_0>"}], tokenize=False)
    ids, at = at_token(vtok, text, "<extra_0>", False)
    with torch.no_grad():
        steps = torch.softmax(LlamaForTokenClassification.from_pretrained(dirs["prm"])(ids).logits[0, at], -1)[:, 1]
    assert len(at) == 3
    assert prm.score([prompt], [state])[0] == pytest.approx(float(steps.min()), abs=1e-6)


def test_process_reward_model_head_is_read_from_its_weights(dirs, vtok, policy_tok):
    prompt, state = ids_of(policy_tok)
    prm = load_scorer(dirs["qwen-prm"], tokenizer=policy_tok, convention="qwen-prm", aggregate="last")
    text = vtok.apply_chat_template([{"role": "user", "content": QUESTION}, {
        "role": "assistant", "content": "3 + 4 = 7<extra_0>7 * 8 = 56<extra_0>56 - 32 = 24<extra_0>"}], tokenize=False)
    ids, at = at_token(vtok, text, "<extra_0>", False)
    backbone, head = dirs["_qwen"]
    with torch.no_grad():
        p = torch.softmax(head(backbone(ids).last_hidden_state[0, at]), -1)[:, 1]
    assert prm.score([prompt], [state])[0] == pytest.approx(float(p[-1]), abs=1e-5)


def test_math_shepherd_causal_lm_reads_good_among_good_and_bad(dirs, vtok, policy_tok):
    prompt, state = ids_of(policy_tok)
    with pytest.raises(InputError, match="search.verifier.causal_lm=true"):
        load_scorer(dirs["shepherd"], tokenizer=policy_tok)  # a causal LM is a policy unless asked
    prm = load_scorer(dirs["shepherd"], tokenizer=policy_tok, causal_lm=True)
    good, bad = vtok.convert_tokens_to_ids("+"), vtok.convert_tokens_to_ids(" -")
    assert prm.good_bad == [good, bad]  # tokenizer.encode("+ -"), as Math-Shepherd's code takes them
    ids, at = at_token(vtok, f"{QUESTION} 3 + 4 = 7 ки\n7 * 8 = 56 ки\n56 - 32 = 24 ки", "ки", True)
    with torch.no_grad():
        logits = LlamaForCausalLM.from_pretrained(dirs["shepherd"])(ids).logits[0, at]
    steps = torch.softmax(logits[:, [good, bad]], -1)[:, 0]
    assert prm.score([prompt], [state])[0] == pytest.approx(float(steps.min()), abs=1e-6)
    with pytest.raises(InputError, match="not one good and one bad token"):
        load_scorer(dirs["shepherd"], tokenizer=policy_tok, causal_lm=True, positive_label="ok")


def test_sequence_classification_orm(dirs, vtok, policy_tok):
    prompt, state = ids_of(policy_tok)
    orm = load_scorer(dirs["orm"], tokenizer=policy_tok)
    assert isinstance(orm, SequenceClassificationRM) and not hasattr(orm, "values_at")
    ids = torch.tensor([vtok(f"{QUESTION} {STATE.strip()}")["input_ids"]])
    with torch.no_grad():
        want = float(torch.sigmoid(LlamaForSequenceClassification.from_pretrained(dirs["orm"])(ids).logits[0, 0]))
    got = orm.score([prompt], [state])[0]
    assert got == pytest.approx(want, abs=1e-6)
    other = ids_of(policy_tok, "Make 10 from 2 5.", "2 * 5 = 10\n")
    assert orm.score([other[0], prompt], [other[1], state])[1] == pytest.approx(got, abs=1e-5)  # left-padded batch
    orm2 = load_scorer(dirs["orm2"], tokenizer=policy_tok)
    with torch.no_grad():
        p = torch.softmax(LlamaForSequenceClassification.from_pretrained(dirs["orm2"])(ids).logits[0], -1)[1]
    assert orm2.score([prompt], [state])[0] == pytest.approx(float(p), abs=1e-6)


def test_value_model_exports_as_token_classification(tmp_path, policy_tok):
    policy, _ = load_policy("micro", policy_tok, max_seq_len=64, seed=0)
    value = ValueModel.from_policy(policy, "scalar", seed=1)
    out = value.export_token_classification(tmp_path / "exported", tokenizer=policy_tok)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForTokenClassification"] and cfg["id2label"] == {"0": "value"}
    model = AutoModelForTokenClassification.from_pretrained(out).eval()
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    with torch.no_grad():
        logits = model(ids).logits[..., 0]
        assert torch.allclose(logits, value.eval()(ids), atol=1e-5)
        assert torch.allclose(torch.sigmoid(logits), value.values(ids), atol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name != "exported"]  # no temporary directory left
    # and it is read back as a one-label PRM
    assert isinstance(load_scorer(out, tokenizer=policy_tok), TokenClassificationPRM)
    with pytest.raises(InputError, match="not an empty directory"):
        value.export_token_classification(out)
    with pytest.raises(InputError, match="3class value model has no"):
        ValueModel.from_policy(policy, "3class").export_token_classification(tmp_path / "c3")


def test_searches_score_with_verifiers(dirs, tmp_path):
    """prm-min with the token-classification PRM, bon-orm and ORM-MCTS with the sequence-classification ORM, VGS
    beam search with a one-label PRM, through ``searchrl search`` on the shipped Countdown policy (the Searcher's check, key and loading)."""
    from searchrl.cli import main

    run = tmp_path / "run"
    smoke = str(Path(__file__).parent.parent / "searchrl" / "presets" / "search-smoke.yaml")
    common = ["--config", smoke, "--run-dir", str(run), "--quiet", "search.n_problems=2", "search.pool_samples=2",
              f"search.prm={dirs['prm']}", f"search.orm={dirs['orm']}", f"search.classifier={dirs['prm1']}",
              "search.vm_mcts.iterations=1"]
    for method in ("prm-min", "bon-orm", "orm-mcts", "beam"):
        assert main(["search", "--method", method, "--budget", "200", *common]) == 0
        (res,) = [json.loads(p.read_text()) for p in (run / "search" / "methods").glob(f"{method}-200-*.json")]
        assert res["row"]["n_problems"] == 2 and res["row"]["value_tokens"] > 0
    # the verifier settings key the results: another aggregate is another result
    assert main(["search", "--method", "prm-min", "--budget", "200", *common, "search.verifier.aggregate=last"]) == 0
    assert len(list((run / "search" / "methods").glob("prm-min-200-*.json"))) == 2
    # a policy given as a scorer is refused, naming the setting
    base = str(resolve_model_path("builtin:sos-tiny-base"))
    assert main(["search", "--method", "prm-min", "--budget", "200", *common, f"search.prm={base}"]) == 2


def test_export_value_command(tmp_path, policy_tok, capsys):
    from searchrl.cli import main

    policy, _ = load_policy("micro", policy_tok, max_seq_len=64, seed=0)
    value = ValueModel.from_policy(policy, "scalar", seed=4)
    value.save_pretrained(tmp_path / "value")
    policy_tok.save_pretrained(tmp_path / "value")
    assert main(["export-value", str(tmp_path / "value"), str(tmp_path / "out"), "--quiet"]) == 0
    model = AutoModelForTokenClassification.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor([[3, 8, 2, 9]])
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(model(ids).logits[..., 0]), value.eval().values(ids), atol=1e-6)
    assert (tmp_path / "out" / "tokenizer.json").exists()
    assert main(["export-value", str(tmp_path / "value"), str(tmp_path / "out"), "--quiet"]) == 2
    assert "not an empty directory" in capsys.readouterr().err
