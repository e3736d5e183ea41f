"""A renderer for the subset of kustomize that k8s/ uses, for offline tests.

`kustomize build` is not installed here and PyPI has no Python renderer of
it, so this implements only what k8s/base and k8s/overlays/production use, and
refuses anything else (an unknown key raises instead of being ignored):

- ``resources``: YAML files (several documents each) and directories holding
  a kustomization.yaml;
- ``patches``: a file or inline patch; a mapping is a strategic-merge patch
  aimed at the object of its own kind and name; a list is a JSON 6902 patch
  (``add``/``replace``/``remove``) aimed by ``target``. Each patch must match
  exactly one object, as kustomize requires;
- ``images``: ``name`` -> ``newName`` / ``newTag`` / ``digest`` in pod
  templates.

Strategic merge follows Kubernetes' merge keys for the lists these manifests
patch (containers, env, ports, volumes, volumeMounts by their keys); every
other list is replaced, as Kubernetes does for lists without a merge key.
No generators, name prefixes, labels or namespace transformers: the
manifests spell those out.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

KNOWN_KEYS = frozenset({"apiVersion", "kind", "resources", "patches", "images"})
# field name -> merge key, for the lists k8s/ patches (Kubernetes' patchMergeKey).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


class KustomizeError(Exception):
    """The kustomization uses something this renderer does not do, or is wrong."""


def render(directory: Path) -> list[Obj]:
    path = directory / "kustomization.yaml"
    if not path.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - KNOWN_KEYS
    if unknown:
        raise KustomizeError(f"{path}: not supported here: {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        if target.is_dir():
            objects.extend(render(target))
        elif target.is_file():
            objects.extend(d for d in yaml.safe_load_all(target.read_text()) if d)
        else:
            raise KustomizeError(f"{path}: resource {entry!r} does not exist")
    for patch in spec.get("patches", []):
        _apply_patch(directory, objects, patch)
    for image in spec.get("images", []):
        _set_image(objects, image)
    return objects


def _apply_patch(directory: Path, objects: list[Obj], patch: Obj) -> None:
    if set(patch) - {"path", "patch", "target"}:
        raise KustomizeError(f"patch options not supported: {sorted(patch)}")
    if "path" in patch:
        docs = [d for d in yaml.safe_load_all((directory / patch["path"]).read_text()) if d]
        if len(docs) != 1:
            raise KustomizeError(f"{patch['path']}: one patch per file")
        body = docs[0]
    else:
        body = yaml.safe_load(patch["patch"])
    if isinstance(body, list):
        if "target" not in patch:
            raise KustomizeError("a JSON 6902 patch needs a target")
        obj = _one(objects, patch["target"])
        for op in body:
            _json6902(obj, op)
    else:
        meta = body.get("metadata", {})
        target = {"kind": body.get("kind"), "name": meta.get("name")}
        if "namespace" in meta:
            target["namespace"] = meta["namespace"]
        target.update(patch.get("target", {}))
        obj = _one(objects, target)
        merged = strategic_merge(obj, body)
        obj.clear()
        obj.update(merged)


def _one(objects: list[Obj], target: Obj) -> Obj:
    if set(target) - {"group", "version", "kind", "name", "namespace"}:
        raise KustomizeError(f"target selectors not supported: {sorted(target)}")

    def matches(obj: Obj) -> bool:
        group, _, version = obj["apiVersion"].rpartition("/")
        meta = obj.get("metadata", {})
        return (
            target.get("kind", obj["kind"]) == obj["kind"]
            and target.get("name", meta.get("name")) == meta.get("name")
            and target.get("namespace", meta.get("namespace")) == meta.get("namespace")
            and target.get("group", group) == group
            and target.get("version", version) == version
        )

    found = [o for o in objects if matches(o)]
    if len(found) != 1:
        raise KustomizeError(f"patch target {target} matches {len(found)} objects, not 1")
    return found[0]


def strategic_merge(base: Any, patch: Any, field: str = "") -> Any:
    """``patch`` merged into a copy of ``base``; ``None`` in a patch deletes."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    key = MERGE_KEYS.get(field)
    if isinstance(base, list) and isinstance(patch, list) and key is not None:
        out_list = copy.deepcopy(base)
        for item in patch:
            same = [i for i, old in enumerate(out_list) if old.get(key) == item.get(key)]
            if same:
                out_list[same[0]] = strategic_merge(out_list[same[0]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def _json6902(obj: Obj, op: Obj) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    parent: Any = obj
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    kind = op["op"]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, op["value"])
        elif kind == "replace":
            parent[index] = op["value"]
        elif kind == "remove":
            del parent[index]
        else:
            raise KustomizeError(f"JSON 6902 op not supported: {kind}")
    elif kind in ("add", "replace"):
        if kind == "replace" and last not in parent:
            raise KustomizeError(f"replace of a missing path: {op['path']}")
        parent[last] = op["value"]
    elif kind == "remove":
        del parent[last]
    else:
        raise KustomizeError(f"JSON 6902 op not supported: {kind}")


def image_name(image: str) -> str:
    """``registry/name:tag@sha256:...`` -> ``registry/name``."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def pod_specs(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    template = spec.get("template", {}).get("spec")
    return [template] if template else []


def _set_image(objects: list[Obj], image: Obj) -> None:
    if set(image) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"image options not supported: {sorted(image)}")
    for obj in objects:
        for pod in pod_specs(obj):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                if image_name(container["image"]) != image["name"]:
                    continue
                name = image.get("newName", image["name"])
                if "digest" in image:
                    container["image"] = f"{name}@{image['digest']}"
                elif "newTag" in image:
                    container["image"] = f"{name}:{image['newTag']}"
                else:
                    tail = container["image"][len(image_name(container["image"])) :]
                    container["image"] = name + tail
