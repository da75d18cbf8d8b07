"""A small renderer for the kustomizations in k8s/ and deploy/k8s-overlays/.

No `kustomize` binary is guaranteed where the tests run, so this implements exactly the
features those files use, and refuses any other: ``resources`` (files and directories),
``namespace``, ``labels`` (metadata only), ``images`` (``newTag``/``newName``/``digest``),
and ``patches`` (inline or from a file; JSON 6902 operations with a ``target``, or strategic
merge patches that delete a resource or merge maps). Where ``kubectl kustomize`` exists,
``tests/test_k8s_overlays.py`` checks that both render the same objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KNOWN = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def render(root: Path) -> list[dict[str, Any]]:
    k = yaml.safe_load((root / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(k) - KNOWN
    if unknown:
        raise Unsupported(f"{root}: {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (root / res).resolve()
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    for p in k.get("patches", []):
        text = p["patch"] if "patch" in p else (root / p["path"]).read_text(encoding="utf-8")
        docs = _patch(docs, yaml.safe_load(text), p.get("target"))
    if "namespace" in k:
        for d in docs:
            if d["kind"] != "Namespace":
                d["metadata"]["namespace"] = k["namespace"]
    for lab in k.get("labels", []):
        if lab.get("includeSelectors") or lab.get("includeTemplates"):
            raise Unsupported("labels on selectors or templates")
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(lab["pairs"])
    for img in k.get("images", []):
        for d in docs:
            for c in _containers(d):
                _retag(c, img)
    return docs


def _containers(d: dict[str, Any]) -> list[dict[str, Any]]:
    spec = d.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    if d["kind"] == "CronJob":
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def _retag(c: dict[str, Any], img: dict[str, str]) -> None:
    name, _, tag = c["image"].partition("@")[0].partition(":")
    if name != img["name"]:
        return
    new = img.get("newName", name)
    if "digest" in img:
        c["image"] = f"{new}@{img['digest']}"
    else:
        c["image"] = f"{new}:{img.get('newTag', tag)}" if img.get("newTag", tag) else new


def _matches(d: dict[str, Any], sel: dict[str, str]) -> bool:
    return all(
        (d["kind"] if key == "kind" else d["metadata"].get(key)) == want
        for key, want in sel.items()
    )


def _patch(docs: list[dict[str, Any]], patch: Any, target: dict[str, str] | None) -> list[Any]:
    if isinstance(patch, list):  # JSON 6902
        if target is None:
            raise Unsupported("a JSON 6902 patch needs a target")
        hits = [d for d in docs if _matches(d, target)]
        if not hits:
            raise Unsupported(f"patch target {target} matches nothing")
        for d in hits:
            for op in patch:
                _json6902(d, op)
        return docs
    sel = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    hits = [d for d in docs if _matches(d, sel)]
    if len(hits) != 1:
        raise Unsupported(f"strategic merge patch for {sel} matches {len(hits)} objects")
    if patch.get("$patch") == "delete":
        return [d for d in docs if d is not hits[0]]
    _merge(hits[0], patch)
    return docs


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, list):
            raise Unsupported(f"list merge at {key!r}: use a JSON 6902 patch")
        else:
            into[key] = copy.deepcopy(value)


def _json6902(doc: dict[str, Any], op: dict[str, Any]) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    parent: Any = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    last = parts[-1]
    if op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    elif op["op"] in ("add", "replace"):
        if isinstance(parent, list):
            if last == "-":
                parent.append(copy.deepcopy(op["value"]))
            elif op["op"] == "add":
                parent.insert(int(last), copy.deepcopy(op["value"]))
            else:
                parent[int(last)] = copy.deepcopy(op["value"])
        else:
            if op["op"] == "replace" and last not in parent:
                raise Unsupported(f"replace of a missing {op['path']}")
            parent[last] = copy.deepcopy(op["value"])
    else:
        raise Unsupported(f"JSON 6902 op {op['op']}")
