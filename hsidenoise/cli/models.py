"""`hsidenoise models`: the DECSC presets and the weights found in weights/."""

from __future__ import annotations

import json
from typing import Any

from hsidenoise.cli.options import JsonOpt
from hsidenoise.cli.terminal import errors_as_one_line, print_json


def models(json_output: JsonOpt = False) -> None:
    """List the DECSC presets, their parameter counts and the weights found in weights/."""
    with errors_as_one_line():
        from hsidenoise.model import list_presets, weights_dir

        presets = list_presets()
        found = []
        for path in sorted(weights_dir().glob("*.safetensors")) if weights_dir().is_dir() else []:
            card_path = path.with_suffix(".json")
            card: dict[str, Any] = {}
            if card_path.is_file():
                try:
                    card = json.loads(card_path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    card = {}
            found.append({"path": str(path), "card": card})
        document = {"presets": presets, "weights": found}
        if json_output:
            print_json(document)
            return
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="DECSC presets")
        for column in ("preset", "parameters", "noise-aware", "prior", "shipped weights"):
            table.add_column(column)
        for item in presets:
            table.add_row(
                item["name"], f"{item['parameters']:,}", str(item["noise_aware"]), item["prior"], item["weights"] or "-"
            )
        Console().print(table)
        if not found:
            Console().print("no weights in weights/")
        for item in found:
            meta = item["card"]
            card = {**meta, **meta.get("card", {})}  # the training card sits under "card"
            score = (card.get("validation") or {}).get("mpsnr")
            line = (
                f"weights: {item['path']} (preset {card.get('preset', '?')}, {card.get('steps', '?')} steps, "
                f"noise {card.get('noise', '?')}, validation MPSNR {score if score is None else round(score, 2)})"
            )
            Console().print(escape(line), soft_wrap=True)
            measured = meta.get("measured") or {}
            if measured:
                Console().print(
                    escape(
                        f"  measured against its front end ({measured.get('front_end', 'lowrank')}"
                        f"{', with the band blend' if measured.get('band_blend') else ''}): "
                        f"{measured['mean_gain_db']:+.3f} dB MPSNR on average, {measured['min_gain_db']:+.3f} dB at "
                        f"worst, over {measured['cases']} validation cases ({measured['command']})"
                    ),
                    soft_wrap=True,
                )
            more = measured.get("front_end_heldout_cubes") or {}
            if more:
                unseen = more.get("unseen_by_network") or {}
                Console().print(
                    escape(
                        f"  on {more['cases']} cases of {more['cubes']} more cubes (fresh noise; "
                        f"{more['training_cubes_among_them']} of them in its training data): {more['mean_gain_db']:+.3f} dB "
                        f"on average, {more['min_gain_db']:+.3f} dB at worst, higher on {more['cases_higher']}; on the "
                        f"{unseen.get('cases', 0)} cases of the cubes it never saw: {unseen.get('mean_gain_db', 0.0):+.3f} dB "
                        f"on average, {unseen.get('min_gain_db', 0.0):+.3f} dB at worst ({more['command']})"
                    ),
                    soft_wrap=True,
                )
