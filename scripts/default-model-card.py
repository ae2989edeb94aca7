#!/usr/bin/env python3
"""Writes the README of a model made by scripts/train-default.sh from its eval/ folder.

  default-model-card.py MODEL_DIR SECONDS > MODEL_DIR/README.md
"""
import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


def main():
    model, seconds = sys.argv[1], int(sys.argv[2])
    ev = os.path.join(model, "eval")
    spec = load(os.path.join(ev, "spec.json"))
    d = spec["decoder"]
    print("# The cocom default model\n")
    print("A tiny COCOM model trained from scratch by `scripts/train-default.sh` on package cards "
          "derived from apt's package index (`scripts/make-default-data.py`): a "
          f"Mistral-architecture decoder ({d['num_hidden_layers']} layers, hidden "
          f"{d['hidden_size']}, {d['num_attention_heads']}/{d['num_key_value_heads']} heads, "
          f"vocabulary {d['vocab_size']} + 4 COCOM tokens) that is also its own compressor, "
          f"compression rate x{spec['compr_rate']} (a 128-token passage becomes "
          f"{128 // spec['compr_rate']} context embeddings). The whole recipe took "
          f"{seconds // 60} min on the machine that made it.\n")
    print("It knows one domain: short cards of Debian packages (name, version, section, "
          "priority, maintainer, source package, homepage, dependencies). It is a demonstration "
          "and a test subject, not a general assistant; for real answers point the engine at a "
          "published checkpoint (see the project README).\n")
    print("## Held-out evaluation (`cocom eval`, packages never seen in training)\n")
    rows = []
    for name, title in (("reconstruction-pretrained.json", "after pre-training"),
                        ("reconstruction.json", "after fine-tuning")):
        p = os.path.join(ev, name)
        if os.path.exists(p):
            j = load(p)
            c = next(iter(j["configurations"].values()))
            rows.append(f"| reconstruction {title} | {j['n']} | ROUGE-L {fmt(c.get('rouge_l'))}, "
                        f"EM {fmt(c.get('exact_match'))} |")
    for name, title in (("qa-contexts.json", "QA, gold card among 5 given"),
                        ("qa-retrieval.json", "QA, top-5 retrieved from a store")):
        p = os.path.join(ev, name)
        if not os.path.exists(p):
            continue
        j = load(p)
        for cfg, c in j["configurations"].items():
            extra = ""
            if c.get("recall_at_k") is not None:
                extra = f", recall@{j.get('k', 5)} {fmt(c['recall_at_k'])}"
            rows.append(f"| {title}: {cfg} | {c['n']} | Match {fmt(c.get('match'))}, "
                        f"EM {fmt(c.get('exact_match'))}, F1 {fmt(c.get('f1'))}{extra} |")
    print("| task | n | result |\n|---|---|---|")
    print("\n".join(rows))
    print("\nThe raw numbers are in `eval/*.json`; the held-out losses during training in "
          "`eval/*-eval-log.jsonl`; the shape in `eval/spec.json`.")


if __name__ == "__main__":
    main()
