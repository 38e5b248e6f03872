"""The Masking tab: every prompt word and every vision token knocked out of attention in turn,
the answer scored teacher-forced; shown for the picked token (drawn with the Maps tab's colours)."""

from __future__ import annotations

import json

from ...errors import VlmscopeError
from ...viz.overlay import strip
from ..tab import Tab, error_line, guard, note_line
from .maps import colormap, maps_tab


class MaskingTab(Tab):
    title, id = "Masking", "masking"

    def layout(self, gr) -> None:
        gr.Markdown(
            "Knock each prompt word and each vision token out of attention, one at a time, and score the "
            "answer teacher-forced: the drop in the selected token's log-probability (positive: it supported "
            "the token)."
        )
        self.mask_btn = gr.Button("Run masking", elem_id="vs-mask-run")
        self.mask_text = gr.HighlightedText(
            label="Prompt words (drop in log-probability)", combine_adjacent=False, elem_id="vs-mask-text"
        )
        self.mask_image = gr.Image(label="Vision tokens", type="pil", interactive=False, elem_id="vs-mask-image")
        self.mask_values = gr.Textbox(visible="hidden", elem_id="vs-mask-values")

    def wire(self, gr) -> None:
        shared, maps = self.shared, maps_tab(self.shared)
        inputs = [shared.session, shared.token, maps.cmap, maps.alpha]
        out = [self.mask_text, self.mask_image, self.mask_values, self.status]
        self.mask_btn.click(self.on_masking, [*inputs, gr.State(True)], out)
        shared.token.change(self.on_masking, [*inputs, gr.State(False)], out)

    def cleared(self) -> dict:
        return {self.mask_text: None, self.mask_image: None}

    def generate_outputs(self) -> list:
        return [self.mask_text, self.mask_image]

    @guard
    def on_masking(self, session, token, cmap, alpha, run_it):
        """Run masking when asked (`run_it`); show the result, if there is one, for `token`."""
        from ...methods.masking import mask_impact
        from ..maps import draw_map

        if session is None or session.run is None or token is None:
            if not run_it:
                return self.nothing()
            return {self.status: error_line(VlmscopeError("generate an answer first"))}
        run = session.run
        if session.masking is None:
            if not run_it:
                return self.nothing()
            with self.shared.models.locks[run.model]:
                session.masking = mask_impact(run.scope, run.answer.prompt, answer_ids=run.answer.ids, mode="both")
        result = session.masking
        j = int(token)
        drops = result.impact("drop", j)
        scale = max(float(abs(drops).max()), 1e-12)
        text = [(u.label + " ", float(d) / scale) for u, d in zip(result.units, drops) if u.kind == "text"]
        tiles = []
        n_images = len([v for v in run.answer.token_map.visuals if v.kind == "image"])
        for k in range(n_images):
            grid = result.vision_map(k, j).reshape(run.answer.token_map.visual(k).merged_thw)[0]
            tiles.append(draw_map(run.frames[k][0], grid, colormap(cmap), alpha))
        values = {
            "token": j,
            "text": [[u.label, float(d)] for u, d in zip(result.units, drops) if u.kind == "text"],
            "vision": [result.vision_map(k, j).tolist() for k in range(n_images)],
        }
        return {
            self.mask_text: text,
            self.mask_image: strip(tiles, gap=8) if tiles else None,
            self.mask_values: json.dumps(values),
            self.status: note_line(f"masking: {len(result.units)} units scored in {result.seconds:.2f} s"),
        }
