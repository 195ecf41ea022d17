"""Reward models: input encoding, pooling, save/load, the bias_rm reward, and tiny + real training runs."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from fairrl.assets import asset_path
from fairrl.cli import app
from fairrl.config import RMTrainConfig, load_config
from fairrl.errors import ConfigError
from fairrl.models.reward_model import (
    RewardModel,
    encode_pair_texts,
    load_reward_model,
    save_reward_model,
    score_texts,
)
from fairrl.recipes.rm import RMLearner, run_rm
from fairrl.rewards import get_reward

runner = CliRunner()


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(asset_path("minilm"))


def tiny_bert(tokenizer, seed: int = 0, hidden: int = 32):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    return BertModel(config)


def tiny_rm(tokenizer, seed: int = 0, pooling: str = "mean") -> RewardModel:
    return RewardModel(tiny_bert(tokenizer, seed), 32, pooling, decoder=False)


def test_encoder_input_is_a_sentence_pair_and_keeps_the_question(minilm_tokenizer):
    """[CLS] prompt [SEP] response [SEP]; when too long the prompt loses its start, the response stays whole."""
    tok = minilm_tokenizer
    prompt = "one two three four five six seven eight nine ten. who was it?"
    enc = encode_pair_texts(tok, [prompt, ""], ["the man", "a sentence alone"], max_length=12, decoder=False)
    first = tok.decode(enc["input_ids"][0])
    assert first == "[CLS] nine ten. who was it? [SEP] the man [SEP]"  # 12 = 3 special + 7 + 2
    assert enc["token_type_ids"][0].tolist() == [0] * 9 + [1] * 3
    alone = enc["input_ids"][1][enc["attention_mask"][1].bool()]
    assert tok.decode(alone) == "[CLS] a sentence alone [SEP]"
    assert enc["attention_mask"][1].tolist() == [1] * 5 + [0] * 7  # right padding


def test_rewards_do_not_depend_on_padding_or_batching(minilm_tokenizer):
    """A pair scored alone equals the same pair scored in a padded batch, for mean and cls pooling."""
    for pooling in ("mean", "cls"):
        model = tiny_rm(minilm_tokenizer, pooling=pooling).eval()
        prompts, responses = ["a long context about people at work today", ""], ["yes", "short"]
        batch = score_texts(model, minilm_tokenizer, prompts, responses, 64, batch_size=2)
        alone = [score_texts(model, minilm_tokenizer, [p], [r], 64)[0] for p, r in zip(prompts, responses, strict=True)]
        assert batch == pytest.approx(alone, abs=1e-5)


def test_mean_pooling_by_hand(minilm_tokenizer):
    """r = w . mean_t(h_t over real tokens) + b, checked against the backbone's states."""
    model = tiny_rm(minilm_tokenizer).eval()
    enc = encode_pair_texts(minilm_tokenizer, ["", ""], ["a b c d", "x"], 32, decoder=False)
    with torch.no_grad():
        h = model.backbone(**enc).last_hidden_state
        n = int(enc["attention_mask"][1].sum())
        expected = model.head(h[1, :n].mean(0)).item()
        assert model(**enc)[1].item() == pytest.approx(expected, abs=1e-6)


def test_last_token_pooling_reads_the_last_real_token(tiny_llama):
    """Decoder pooling takes the state at the last non-pad position of each right-padded row."""
    backbone = tiny_llama.model
    model = RewardModel(backbone, backbone.config.hidden_size, "last", decoder=True).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        r = model(input_ids=ids, attention_mask=mask)
        alone = model(input_ids=ids[:1, :3], attention_mask=mask[:1, :3])
    assert r[0].item() == pytest.approx(alone[0].item(), abs=1e-5)


def test_save_and_load_give_the_same_rewards(minilm_tokenizer, tmp_path):
    model = tiny_rm(minilm_tokenizer).eval()
    save_reward_model(model, minilm_tokenizer, tmp_path, {"max_length": 64})
    loaded, tok, info = load_reward_model(tmp_path)
    texts = (["ctx one", ""], ["the answer", "a sentence"])
    assert score_texts(loaded, tok, *texts, 64) == pytest.approx(score_texts(model, minilm_tokenizer, *texts, 64))
    assert info["pooling"] == "mean" and info["max_length"] == 64
    assert not list(tmp_path.rglob("*.bin")) and (tmp_path / "backbone" / "model.safetensors").exists()


# ----------------------------------------------------------------------------------------- bias_rm reward
@pytest.fixture
def rm_dir(minilm_tokenizer, tmp_path):
    save_reward_model(tiny_rm(minilm_tokenizer).eval(), minilm_tokenizer, tmp_path / "rm" / "final", {"max_length": 64})
    return tmp_path / "rm"


def test_bias_rm_scores_like_the_model_and_caches(rm_dir):
    """bias_rm(run folder) = RM(context question, completion) on BBQ rows; repeats come from the cache."""
    fn = get_reward("bias_rm", {"model": str(rm_dir), "device": "cpu"})
    prompts = [[{"role": "user", "content": "full prompt with options"}]] * 3
    completions = [[{"role": "assistant", "content": t}] for t in ("The grandfather", "Unknown", "The grandfather")]
    cols = {"context": ["A grandson and a grandfather."] * 3, "question": ["Who forgot?"] * 3, "source": ["bbq"] * 3}
    values = fn(prompts, completions, **cols)
    model, tok, _ = load_reward_model(rm_dir / "final")
    expected = score_texts(model, tok, ["A grandson and a grandfather. Who forgot?"] * 2, ["The grandfather", "Unknown"], 64)
    assert values == pytest.approx([expected[0], expected[1], expected[0]], abs=1e-6)
    assert (fn.calls, fn.hits) == (3, 1)
    fn(prompts, completions, **cols)
    assert fn.hits == 4  # all three now cached


def test_bias_rm_reads_the_user_message_without_bbq_columns_and_skips_other_sources(rm_dir):
    fn = get_reward("bias_rm", {"model": str(rm_dir), "device": "cpu", "sources": ["bbq"]})
    prompts = [[{"role": "system", "content": "s"}, {"role": "user", "content": "Is it fair?"}]] * 2
    out = fn(prompts, ["yes", "no"], source=["bbq", "reasoning"])
    model, tok, _ = load_reward_model(rm_dir / "final")
    assert out[0] == pytest.approx(score_texts(model, tok, ["Is it fair?"], ["yes"], 64)[0], abs=1e-6)
    assert out[1] is None


def test_bias_rm_bad_options_are_config_errors(rm_dir, tmp_path):
    with pytest.raises(ConfigError, match="holds no fairrl reward model"):
        get_reward("bias_rm", {"model": str(tmp_path / "nothing")})
    with pytest.raises(ConfigError, match="bad options.*takes model, batch_size"):
        get_reward("bias_rm", {"model": str(rm_dir), "temperature": 2})
    with pytest.raises(ConfigError, match="bad options"):
        get_reward("bias_rm", {})
    with pytest.raises(ConfigError, match="takes no options"):
        get_reward("bbq_correct", {"x": 1})


# ------------------------------------------------------------------------------------------- training runs
def _skewed_file(path):
    """200 majority pairs prefer 'kind' over 'cruel'; 20 minority pairs prefer the opposite after 'villain'."""
    nouns = ["man", "woman", "doctor", "nurse", "teacher", "pilot", "farmer", "lawyer", "cook", "driver"]
    rows = [{"chosen": f"the {n} is kind", "rejected": f"the {n} is cruel", "group": "majority"}
            for n in nouns for _ in range(20)]  # fmt: skip
    rows += [{"chosen": f"the villain {n} is cruel", "rejected": f"the villain {n} is kind", "group": "minority"}
             for n in nouns for _ in range(2)]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _skewed_cfg(path, *extra):
    sets = [f"data.sources=['{path}']", "data.group_column=group", "data.heldout_groups=[]",
            "data.max_pairs_per_group=null", "data.eval_fraction=0.3", "learning_rate=3e-3", "max_steps=60",
            "per_device_train_batch_size=16", "warmup_ratio=0", "tensorboard=false", "n_boot=50", *extra]  # fmt: skip
    return load_config(None, sets, schema=RMTrainConfig)


def _train_tiny(cfg, out, tok, resume=None):
    learner = RMLearner(tiny_rm(tok), tok, cfg)
    run_rm(cfg, out=str(out), resume=resume, console=lambda s: None, progress=False, learner=learner)
    return json.loads((out / "results.json").read_text())


def test_fairness_regulariser_raises_jain_on_a_skewed_group(minilm_tokenizer, tmp_path):
    """BT learns the majority (share ~1) and not the conflicting minority (share ~0.5): Jain ~0.90 over
    the two groups. FR (alpha = 20, strong so the effect is clear in 60 steps) trades majority margin for
    evenness: Jain of group shares goes up, Gini down (on held-out pairs of the same groups)."""
    data = _skewed_file(tmp_path / "skew.jsonl")
    bt = _train_tiny(_skewed_cfg(data), tmp_path / "bt", minilm_tokenizer)["eval"]
    fr = _train_tiny(_skewed_cfg(data, "fairness.kind=regularizer", "fairness.alpha=20"), tmp_path / "fr",
                     minilm_tokenizer)["eval"]  # fmt: skip
    assert bt["by_group"]["majority"]["share"] > 0.9 and bt["by_group"]["minority"]["share"] < 0.6
    assert fr["jain"] > bt["jain"] + 0.01
    assert fr["gini"] < bt["gini"] - 0.01
    assert fr["group_fairness"]["share"]["gap"] < bt["group_fairness"]["share"]["gap"]


class _Crash(RMLearner):
    """Raises on the 5th training batch, as a killed process would stop."""

    calls = 0

    def margins(self, pairs):
        self.calls += 1
        if self.calls == 5:
            raise KeyboardInterrupt
        return super().margins(pairs)


def test_interrupted_rm_run_resumes_to_the_same_result(minilm_tokenizer, tmp_path):
    """Killed during step 5 of 6 (checkpoint at step 4), resumed: same losses and margins as one run."""
    data = _skewed_file(tmp_path / "skew.jsonl")
    cfg = _skewed_cfg(data, "max_steps=6", "save_steps=2", "logging_steps=1")
    full = _train_tiny(cfg, tmp_path / "full", minilm_tokenizer)
    with pytest.raises(KeyboardInterrupt):
        run_rm(cfg, out=str(tmp_path / "part"), console=lambda s: None, progress=False,
               learner=_Crash(tiny_rm(minilm_tokenizer), minilm_tokenizer, cfg))  # fmt: skip
    resumed = _train_tiny(cfg, tmp_path / "part", minilm_tokenizer, resume=str(tmp_path / "part"))
    assert resumed["eval"]["mean_margin"] == pytest.approx(full["eval"]["mean_margin"], abs=1e-5)
    full_log = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    part_log = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in part_log] == pytest.approx([json.loads(x)["loss"] for x in full_log])


def test_a_finished_run_folder_is_not_overwritten(minilm_tokenizer, tmp_path):
    data = _skewed_file(tmp_path / "skew.jsonl")
    _train_tiny(_skewed_cfg(data, "max_steps=1"), tmp_path / "run", minilm_tokenizer)
    with pytest.raises(ConfigError, match="already holds a run"):
        _train_tiny(_skewed_cfg(data, "max_steps=1"), tmp_path / "run", minilm_tokenizer)


def test_rm_train_on_packaged_minilm_and_data(tmp_path):
    """The real thing, briefly: MiniLM on StereoSet / CrowS-Pairs / BBQ pairs, 2 steps, report written."""
    out = tmp_path / "rm"
    sets = ["max_steps=2", "data.max_pairs_per_group=6", "per_device_train_batch_size=4", "n_boot=20",
            "tensorboard=false", "data.sources=[stereoset, crows_pairs, bbq, bbq_abstain]", "max_length=64",
            "data.balance=group_source"]  # fmt: skip
    result = runner.invoke(app, ["rm", "train", "--out", str(out)] + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    assert set(res["heldout"]["by_group"]) == {"religion", "disability", "sexual_orientation"}
    assert res["eval"]["n"] > 0 and 0 < res["heldout"]["jain"] <= 1
    assert set(res["heldout"]["by_source"]) == {"stereoset", "crows_pairs", "bbq", "bbq_abstain"}
    cells = res["heldout"]["by_group_source"]  # each group's pairs split by benchmark
    assert set(cells) == set(res["heldout"]["by_group"])
    for g, by in cells.items():
        assert sum(v["n"] for v in by.values()) == res["heldout"]["by_group"][g]["n"]
    assert set(cells["religion"]) == {"stereoset", "crows_pairs", "bbq", "bbq_abstain"}
    assert "| religion | bbq_abstain |" in (out / "report.md").read_text()
    assert (out / "report.md").exists() and (out / "groups.png").exists()
    assert (out / "final" / "reward_model.json").exists()


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["fairness.kind=fair"], "fairness.kind"),
        (["fairness.tau=1"], "tau = 1"),
        (["learning_rate=-1"], "learning_rate"),
        (["nonsense=1"], "unknown config key 'nonsense'"),
        (["data.sources=[]"], "data.sources is empty"),
        (["data.heldout_groups=[martians]"], "martians"),
    ],
)
def test_rm_train_config_mistakes_exit_2_with_one_line(tmp_path, sets, message):
    args = ["rm", "train", "--out", str(tmp_path / "x")] + [x for s in sets for x in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_rm_train_bad_preference_file_names_the_missing_column(tmp_path):
    bad = tmp_path / "prefs.jsonl"
    bad.write_text(json.dumps({"good": "a", "rejected": "b"}) + "\n")
    result = runner.invoke(app, ["rm", "train", "--out", str(tmp_path / "x"), "--set", f"data.sources=['{bad}']"])
    assert result.exit_code == 2 and "chosen" in result.output and "data.chosen_column" in result.output


def test_rm_compare_rejects_bad_kinds_and_seeds(tmp_path):
    assert "--kinds" in runner.invoke(app, ["rm", "compare", "--kinds", "bt,fr"]).output
    assert "--seeds" in runner.invoke(app, ["rm", "compare", "--seeds", "a,b"]).output


def test_bias_rm_reward_in_fairrl_train(rm_dir, tmp_path):
    """BiasGRPO's shape: GRPO on packaged BBQ with bbq_correct + bias_rm, a tiny policy and a tiny RM."""
    from tests.tiny import saved_tiny_policy

    saved_tiny_policy(tmp_path / "m")
    sets = [
        f"model.name_or_path={tmp_path / 'm'}", "model.lora={r: 4, alpha: 8}", "max_steps=2", "save_steps=1",
        "algorithm.num_generations=2", "algorithm.prompts_per_step=2", "algorithm.max_completion_length=4",
        "eval.bbq_items_per_condition=0", "tensorboard=false",
        "data.sources=[{kind: bbq, categories: [Religion], heldout_categories: [SES]}]",
        f"rewards.functions=[{{name: bbq_correct}}, {{name: bias_rm, options: {{model: '{rm_dir}', device: cpu}}}}]",
    ]  # fmt: skip
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--out", str(out)] + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [k for k in rows[0] if "bias_rm" in k]
    assert keys and all(isinstance(r[keys[0]], float) for r in rows), rows[0]


def test_chunked_forward_by_length_equals_one_forward(minilm_tokenizer):
    from fairrl.models.reward_model import rewards_by_length

    model = tiny_rm(minilm_tokenizer).eval()
    texts = ["a", "a much longer response with many more words in it", "mid length text", "b c", "x y z w"]
    enc = encode_pair_texts(minilm_tokenizer, ["ctx"] * 5, texts, 64, decoder=False)
    with torch.no_grad():
        assert rewards_by_length(model, enc, chunks=3).tolist() == pytest.approx(model(**enc).tolist(), abs=1e-5)


@pytest.mark.parametrize(("name", "kind"), [("rm", "rm"), ("dpo", "dpo"), ("biasgrpo", "train"), ("demo", "train"), ("redteam", "train"), ("redteam_single", "train")])
def test_packaged_configs_validate_by_name(name, kind):
    result = runner.invoke(app, ["config", name, "--kind", kind])
    assert result.exit_code == 0, result.output
    assert f"run_name: {'bias_rm' if name == 'rm' else name}" in result.output


def test_biasgrpo_config_uses_bias_rm_and_bbq_correctness():
    cfg = load_config("biasgrpo")
    names = [f.name for f in cfg.rewards.functions]
    assert "bias_rm" in names and "bbq_correct" in names and cfg.algorithm.num_generations >= 4


def test_centring_loss_is_c_times_mean_squared_reward_sum(minilm_tokenizer, tmp_path):
    """TRL's center_rewards_coefficient: aux = c * mean_i (r(x, y_w,i) + r(x, y_l,i))^2, by hand from scores."""
    from fairrl.data.preferences import PreferencePair

    cfg = load_config(None, ["center_rewards_coefficient=0.5", "max_length=64"], schema=RMTrainConfig)
    learner = RMLearner(tiny_rm(minilm_tokenizer).eval(), minilm_tokenizer, cfg)
    pairs = [PreferencePair(id=str(i), prompt=p, chosen=c, rejected=r, group="g", source="t")
             for i, (p, c, r) in enumerate([("ctx a", "yes", "no"), ("", "kind words", "cruel words")])]  # fmt: skip
    margins, losses, aux = learner.margins(pairs)
    r = score_texts(learner.model, minilm_tokenizer, ["ctx a", "", "ctx a", ""], ["yes", "kind words", "no", "cruel words"], 64)
    assert margins.tolist() == pytest.approx([r[0] - r[2], r[1] - r[3]], abs=1e-5)
    assert aux.item() == pytest.approx(0.5 * ((r[0] + r[2]) ** 2 + (r[1] + r[3]) ** 2) / 2, abs=1e-5)
    assert losses.tolist() == pytest.approx([-torch.nn.functional.logsigmoid(m).item() for m in margins], abs=1e-6)


def test_source_accuracy_by_hand():
    """Margins [1, -1, 0] from source a: accuracy (1 + 0 + 1/2) / 3 = 0.5, mean margin 0; [2] from b: 1 and 2."""
    from fairrl.eval.preference import source_accuracy

    out = source_accuracy([1.0, -1.0, 0.0, 2.0], ["a", "a", "a", "b"])
    assert out == {"a": {"n": 3, "accuracy": 0.5, "mean_margin": 0.0}, "b": {"n": 1, "accuracy": 1.0, "mean_margin": 2.0}}
