"""API misuse: every case raises VlmscopeError (one line naming the bad value), never another
exception from deep inside, and nothing is silently accepted."""

from __future__ import annotations

import pytest

import vlmscope
import vlmscope.store as vlmscope_store
from vlmscope import CapturePlan, Example, VlmscopeError
from vlmscope.assets import HERE
from vlmscope.methods import Answer, explain, map_method, mask_impact
from vlmscope.methods.lens import lens

scope = None
img = str(HERE / "examples" / "shapes_demo.png")
ex = Example("What colour is the square?", images=[img])


def _cases():
    global scope
    scope = scope or vlmscope.load(device="cpu")
    cases = {
        "forward bad site": lambda: scope.forward(ex, "llm.nope"),
        "forward bad layers": lambda: scope.forward(ex, "llm.layers", layers="9"),
        "forward bad layers type": lambda: scope.forward(ex, "llm.layers", layers=3.5),
        "forward bad tokens": lambda: scope.forward(ex, "llm.layers", tokens="visoin"),
        "forward bad reduce": lambda: scope.forward(ex, "llm.layers", reduce="median"),
        "forward image:5": lambda: scope.forward(ex, "llm.layers.0", tokens="image:5"),
        "forward int example": lambda: scope.forward(5, "llm.layers.0"),
        "forward capture int": lambda: scope.forward(ex, 5),
        "forward empty plan": lambda: scope.forward(ex, []),
        "generate with answer": lambda: scope.generate(Example("hi", answer="x")),
        "generate mnt -1": lambda: scope.generate(ex, max_new_tokens=-1),
        "generate mnt str": lambda: scope.generate(ex, max_new_tokens="4"),
        "example no content": lambda: Example(""),
        "example prompt int": lambda: Example(5),
        "example images int": lambda: Example("hi", images=5),
        "example missing image": lambda: scope.forward(Example("hi", images=["/nope.png"]), "llm.layers.0"),
        "plan bad columns": lambda: CapturePlan.of("llm.layers.attn", columns="text"),
        "plan bad name": lambda: CapturePlan.of("llm.layers", name="a/b"),
        "explain bad method": lambda: explain(scope, ex, method="foo"),
        "explain bad heads": lambda: explain(scope, ex, heads="99"),
        "explain bad agg": lambda: explain(scope, ex, head_agg="median"),
        "explain bad layer_agg": lambda: explain(scope, ex, layer_agg="median"),
        "explain no image": lambda: explain(scope, Example("hi"), method="rollout", max_new_tokens=2),
        "explain mnt 0": lambda: explain(scope, ex, max_new_tokens=0),
        "map_method bad opt": lambda: map_method("raw", foo=1),
        "mask bad mode": lambda: mask_impact(scope, ex, mode="pixels"),
        "mask bad window": lambda: mask_impact(scope, ex, window=0),
        "mask bad pert": lambda: mask_impact(scope, ex, perturbation="blur"),
        "mask bad batch": lambda: mask_impact(scope, ex, batch_size=0),
        "mask bad option": lambda: mask_impact(scope, ex, method="zero"),
        "mask video": lambda: mask_impact(scope, Example("hi", videos=[[img, img]])),
        "edit bad": lambda: scope.forward(ex, "llm.layers.0", edits={"llm.layers.0": 3}),
        "edit edits not dict": lambda: scope.forward(ex, "llm.layers.0", edits=[1]),
        "load bad device": lambda: vlmscope.load(device="gpu9"),
        "load bad dtype": lambda: vlmscope.load(dtype="int3"),
        "load missing": lambda: vlmscope.load("/no/such/dir"),
        "load bad attn": lambda: vlmscope.load(attn_implementation="nope"),
        "trace missing site": lambda: scope.forward(ex, "llm.layers.0")["llm.layers.1"],
        "tokenmap visual 5": lambda: scope.prepare(ex).token_maps[0].visual(5),
        "store open missing": lambda: vlmscope_store.open("/no/store"),
        "answer of_ids bad": lambda: Answer.of_ids(scope, ex, ["a"]),
        "lens bad kind": lambda: lens(scope, ex, kind="x"),
    }
    return cases


@pytest.fixture(scope="module")
def cases():
    return _cases()


def test_every_misuse_is_a_vlmscope_error(cases):
    loose = {}
    for name, call in cases.items():
        try:
            call()
            loose[name] = "accepted"
        except VlmscopeError as e:
            assert "\n" not in str(e) and str(e), name
        except Exception as e:  # noqa: BLE001 (the point is to catch anything else)
            loose[name] = f"{type(e).__name__}: {e}"
    assert not loose, loose
    assert len(cases) >= 40


def test_a_trace_iterates_over_its_site_names_like_a_mapping(scopes):
    trace = scopes["qwen2_vl"].forward(vlmscope.Example("hi"), ["llm.layers.0", "llm.norm"], tokens="query")
    assert list(trace) == ["llm.layers.0", "llm.norm"] == list(trace.keys()) and len(trace) == 2
    assert dict(trace.items())["llm.norm"][0].shape[0] == 1
    assert bool(scopes["qwen2_vl"].forward(vlmscope.Example("hi")))  # no captures, still a trace


def test_a_trace_and_a_token_map_show_themselves_in_a_notebook(scopes):
    scope = scopes["qwen2_5_vl"]
    image = vlmscope.inputs.load_image(str(HERE / "examples" / "shapes_demo.png"))
    trace = scope.generate(Example("What <b>is</b> here?", images=[image]), "llm.layers.0", max_new_tokens=2)
    tm = trace.token_maps[0]
    assert repr(tm).startswith(f"TokenMap({tm.length} tokens; prompt {tm.prompt[0]}-{tm.prompt[1]}")
    assert len(repr(trace).splitlines()) == 1 and "llm.layers.0" in repr(trace)
    page = trace._repr_html_()
    assert "<table" in page and "llm.layers.0" in page and f"[{tm.visuals[0].segments[0][0]}," in page
    assert "<b>is</b>" not in page  # text is escaped
