"""Each metric with a published definition against values computed BY HAND from the paper's
formula on a small fixed input (the expected numbers are written here, never taken from our
own functions), so that a wrong convention (orientation, denominator, stemming, recall vs F1,
scored tokens) fails a test.

Sources: MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation"): PrivLeak,
KnowMem / VerbMem ROUGE-L F1; TOFU (Maini et al. 2024): ROUGE-L recall, probability, truth
ratio, model utility, forget quality; Min-K% (Shi et al. 2024); Min-K%++ (Zhang et al. 2024).
"""

from __future__ import annotations

import math
import zlib
from types import SimpleNamespace

import pytest
import torch

from moe_unlearn.eval import EvalContext, evaluate_model
from moe_unlearn.eval.generation import rouge_l, tofu_rouge_l
from moe_unlearn.eval.privacy import membership_scores, muse_auc, privleak, retrained_aucs
from moe_unlearn.eval.tofu import harmonic_mean, normalised_prob

from eval_helpers import make_cfg, make_data

# ---- PrivLeak (MUSE) --------------------------------------------------------------------------
# MUSE's News table: the retrained model's Min-40% AUC is 0.4772 and the target model (trained on
# the forget set) has PrivLeak -99.8. MUSE's AUC labels forget 0 and holdout 1.
MUSE_NEWS_RETRAIN_AUC = 0.4772

# 40 forget x 25 holdout = 1000 pairs; exactly one holdout example scores above one forget example
FORGET = [10.0] * 39 + [0.5]
HOLDOUT = [0.0] * 24 + [1.0]


def test_muse_auc_and_privleak_reproduce_the_published_target_row():
    assert muse_auc(FORGET, HOLDOUT) == pytest.approx(1 / 1000)
    # (0.001 - 0.4772) / 0.4772 x 100 = -99.7904...: MUSE prints -99.8 for its target models
    leak = privleak(muse_auc(FORGET, HOLDOUT), MUSE_NEWS_RETRAIN_AUC)
    assert leak == pytest.approx(-99.7904, abs=1e-3)
    assert round(leak, 1) == -99.8
    # the retrained model itself: 0 by definition; a model that over-forgets: positive
    assert privleak(MUSE_NEWS_RETRAIN_AUC, MUSE_NEWS_RETRAIN_AUC) == 0.0
    assert privleak(muse_auc(HOLDOUT, FORGET), MUSE_NEWS_RETRAIN_AUC) == pytest.approx((0.999 - 0.4772) / 0.4772 * 100)
    assert privleak(0.999, 0.4772) == pytest.approx(109.3462, abs=1e-3)


def _ctx(retrained, retrained_auc=0.5):
    return SimpleNamespace(retrained=retrained, cfg=SimpleNamespace(retrained_auc=retrained_auc))


def test_retrained_auc_is_read_in_muse_orientation():
    scores = ("loss", "zlib", "mink", "minkpp")
    new = {"privacy": {"auc": dict.fromkeys(scores, 0.4772), "member_auc": dict.fromkeys(scores, 0.5228)}}
    old = {"privacy": {"auc": dict.fromkeys(scores, 0.5228)}}  # written before member_auc: member orientation
    for ref in (new, old):
        aucs, source = retrained_aucs(_ctx(ref))
        assert aucs["mink"] == pytest.approx(0.4772) and source == "retrained model"
    aucs, source = retrained_aucs(_ctx(None, retrained_auc=0.4772))
    assert aucs == dict.fromkeys(scores, 0.4772) and source == "eval.retrained_auc"


def test_privacy_block_keys_and_the_member_form(tiny):
    """privacy.value / privleak / auc are MUSE's; member_auc / member_privleak the other orientation."""
    model, tok = tiny
    cfg = make_cfg(metrics=["privacy"], retrained_auc=MUSE_NEWS_RETRAIN_AUC)
    p = evaluate_model(model, tok, make_data(), cfg, progress=False)["privacy"]
    assert p["value"] == p["privleak"]["mink"] and p["orientation"] == "muse" and p["k"] == 0.4
    for s in ("loss", "zlib", "mink", "minkpp"):
        assert p["privleak"][s] == pytest.approx((p["auc"][s] - 0.4772) / 0.4772 * 100)
        assert p["member_privleak"][s] == pytest.approx((p["member_auc"][s] - 0.5228) / 0.5228 * 100)
        assert p["member_auc"][s] == pytest.approx(1 - p["auc"][s])


# ---- Min-k% / Min-k%++ / LOSS / zlib: the text's own tokens --------------------------------------
V = 128  # the controlled model's vocabulary


class _AllButEOS(torch.nn.Module):
    """Logit 5 on every token except EOS (logit 0), at every position."""

    def __init__(self, eos: int) -> None:
        super().__init__()
        self.eos = eos
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.full((*input_ids.shape, V), 5.0)
        logits[..., self.eos] = 0.0
        return SimpleNamespace(logits=logits)


def _scores(tok, text: str, include_eos: bool) -> dict[str, float]:
    recs = [{"text": text}]
    data = SimpleNamespace(forget=SimpleNamespace(qa=None, text=recs, mc=None), retain=None, holdout=None, utility_mc=None)
    ctx = EvalContext(_AllButEOS(tok.eos_token_id), tok, data, make_cfg(mia_include_eos=include_eos))
    return {k: v[0] for k, v in membership_scores(ctx, "forget", "text").items()}


def test_membership_scores_by_hand_text_tokens_only_by_default(tiny):
    _, tok = tiny  # character-level: "abcdef" is 6 tokens; the first has no context, 5 are scored, + EOS
    text = "abcdef"
    z = (V - 1) * math.exp(5) + 1
    lp_hi, lp_lo = math.log(math.exp(5) / z), math.log(1 / z)  # a text token / the EOS
    p_hi, p_lo = math.exp(lp_hi), math.exp(lp_lo)
    mu = (V - 1) * p_hi * lp_hi + p_lo * lp_lo
    sigma = math.sqrt((V - 1) * p_hi * lp_hi**2 + p_lo * lp_lo**2 - mu**2)
    z_hi, z_lo = (lp_hi - mu) / sigma, (lp_lo - mu) / sigma
    zlib_len = len(zlib.compress(text.encode()))

    papers = _scores(tok, text, include_eos=False)  # 5 text tokens; Min-40%: floor(2.0) = 2 lowest
    assert papers["loss"] == pytest.approx(lp_hi, abs=1e-5)
    assert papers["zlib"] == pytest.approx(lp_hi / zlib_len, abs=1e-6)
    assert papers["mink"] == pytest.approx(lp_hi, abs=1e-5)
    assert papers["minkpp"] == pytest.approx(z_hi, abs=1e-4)

    old = _scores(tok, text, include_eos=True)  # 6 tokens; Min-40%: floor(2.4) = 2 lowest = EOS + one
    assert old["loss"] == pytest.approx((5 * lp_hi + lp_lo) / 6, abs=1e-5)
    assert old["mink"] == pytest.approx((lp_lo + lp_hi) / 2, abs=1e-5)
    assert old["minkpp"] == pytest.approx((z_lo + z_hi) / 2, rel=1e-3)  # z_lo ~ -137: float32 sigma


# ---- ROUGE: MUSE's F1 unstemmed vs TOFU's recall stemmed -----------------------------------------
def test_rouge_l_muse_f1_unstemmed_and_tofu_recall_stemmed():
    # tokens: [the, cats, were, running] vs reference [the, cat, was, running]
    # unstemmed LCS = {the, running} = 2: P = R = 2/4, F1 = 0.5
    assert rouge_l("The cats were running", "the cat was running") == pytest.approx(0.5)
    # Porter (words longer than 3 letters): cats -> cat, running -> run; LCS = {the, cat, run} = 3: R = 3/4
    assert tofu_rouge_l("The cats were running", "the cat was running") == pytest.approx(0.75)
    # recall vs F1 on a short prediction: LCS 2 of a 4-word reference, 2-word prediction
    assert tofu_rouge_l("the cat", "the cat sat down") == pytest.approx(2 / 4)
    assert rouge_l("the cat", "the cat sat down") == pytest.approx(2 * 1.0 * 0.5 / 1.5)


# ---- TOFU: probability, truth ratio base, model utility ----------------------------------------
def test_tofu_normalised_probability_by_hand():
    # p~(answer) = 0.5, p~(perturbed) = 0.25 and 0.125: 0.5 / 0.875
    out = normalised_prob(torch.tensor([math.log(0.5)]), [torch.tensor([math.log(0.25), math.log(0.125)])])
    assert out == pytest.approx([0.5 / 0.875])


def test_tofu_model_utility_is_the_harmonic_mean_of_nine_numbers(tiny_benchmark):
    """On the benchmark model (it knows its retain facts, so no part is 0), with two slices of the
    retain set standing in for real authors and world facts."""
    from moe_unlearn.data import Split, UnlearnData
    from moe_unlearn.models import load_model

    data = UnlearnData.from_manifest(tiny_benchmark)
    model, tok = load_model(data.model)
    qa = data.retain.qa
    data.real_authors = Split(qa=[{**r, "paraphrased_answer": "unused"} for r in qa[:6]])
    data.world_facts = Split(qa=qa[6:12])
    out = evaluate_model(model, tok, data, make_cfg(max_examples=8, metrics=["tofu_model_utility"]), progress=False)
    mu = out["tofu_model_utility"]
    names = [f"{s}_{m}" for s in ("retain", "real_authors", "world_facts") for m in ("prob", "tofu_rouge", "truth_ratio")]
    assert sorted(mu["parts"]) == sorted(names) and mu["missing"] == []
    parts = [mu["parts"][n] for n in names]
    assert all(v > 0 for v in parts)
    assert mu["value"] == pytest.approx(9 / sum(1 / v for v in parts))
    assert harmonic_mean([1.0, 0.5, 0.25] * 3) == pytest.approx(9 / 21)
    # real authors / world facts: TOFU scores the truth ratio against the answer, never a paraphrase
    ctx = EvalContext(model, tok, data, make_cfg(max_examples=8))
    assert ctx.result("truth_ratio", "real_authors").details["base"] == "answer"


def test_tofu_model_utility_is_absent_without_the_tofu_sets(tiny):
    model, tok = tiny
    out = evaluate_model(model, tok, make_data(), make_cfg(metrics=["truth_ratio", "tofu_model_utility"]), progress=False)
    assert "tofu_model_utility" not in out
    assert out["retain"]["truth_ratio_base"] == "paraphrased_answer"  # TOFU's retain set: against the paraphrase
