"""Validates SPIKE custom resources against the CRD schemas generated into crds/.

Usage: validate_custom_resources.py CRD_DIR FILE... ; a FILE is YAML (one or more documents) or
Markdown, whose ```yaml blocks are read. Every document of kind SpikeCluster, SpikeSecret or
SpikePolicy is validated; a file with none is fine. The schema is made strict the way kubeconform
--strict does: an object with `properties` and neither `additionalProperties` nor
`x-kubernetes-preserve-unknown-fields` rejects unknown fields (the API server would silently
prune them, hiding a typo). Exits 1 listing every failure.
"""

import pathlib
import re
import sys

import jsonschema
import yaml

GROUP = "spike.spiffe.io"
FENCE = re.compile(r"^```ya?ml\s*\n(.*?)^```", re.M | re.S)


def strict(schema):
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def with_object_meta(schema):
    """The API server adds apiVersion, kind and metadata to every CRD's schema; generated CRDs
    (kube's CustomResource derive) leave them out."""
    props = dict(schema.get("properties", {}))
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props.setdefault("metadata", {"type": "object"})
    return {**schema, "properties": props}


def load_schemas(crd_dir):
    schemas = {}
    for path in sorted(pathlib.Path(crd_dir).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                schemas[key] = strict(with_object_meta(version["schema"]["openAPIV3Schema"]))
    return schemas


def documents(path):
    text = path.read_text()
    blocks = FENCE.findall(text) if path.suffix == ".md" else [text]
    for block in blocks:
        try:
            yield from [d for d in yaml.safe_load_all(block) if isinstance(d, dict)]
        except yaml.YAMLError as err:
            # A Markdown block may be a template with placeholders; only SPIKE objects count.
            if path.suffix != ".md" or GROUP in block:
                yield {"apiVersion": GROUP + "/", "kind": "(not YAML)", "error": str(err)}


def main(argv):
    crd_dir, files = argv[1], argv[2:]
    schemas = load_schemas(crd_dir)
    if not schemas:
        print(f"no CustomResourceDefinition found in {crd_dir}", file=sys.stderr)
        return 1
    failures, checked = [], 0
    for name in files:
        path = pathlib.Path(name)
        for doc in documents(path):
            api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
            if not api.startswith(GROUP + "/"):
                continue
            label = f"{path}: {kind} {doc.get('metadata', {}).get('name', '?')}"
            if "error" in doc:
                failures.append(f"{path}: not valid YAML: {doc['error']}")
                continue
            schema = schemas.get((api, kind))
            if schema is None:
                failures.append(f"{label}: no CRD for {api} {kind}")
                continue
            checked += 1
            for err in jsonschema.Draft7Validator(schema).iter_errors(doc):
                where = "/".join(str(p) for p in err.absolute_path) or "(root)"
                failures.append(f"{label}: {where}: {err.message}")
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"custom resources: {checked} checked, {len(failures)} failures")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
