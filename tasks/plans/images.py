"""Plans for shipping an image to a host without a registry: which layers the host lacks, and
the archive `docker load` gets.

What the host has is read as layers, not IDs: every image's diff IDs (the digests of its
uncompressed layers), the same on every engine and image store. An image ID is not: the
classic store names an image by its config's digest, the containerd store by its manifest's.
Each layer's chain ID (the layer and every layer under it) says whether the host has it where
it counts, as the engine unpacked it.

The archive is both formats `docker save` writes since Engine 25: an OCI layout (oci-layout,
index.json, blobs/sha256/...), which the containerd store loads, and a manifest.json naming
the same blobs, which the classic store loads. Both read the file of a layer only when the
engine lacks its chain: the classic store by its manifest.json, the containerd store because
it unpacks only what it lacks. The containerd store also wants each layer's blob in its
content store under the digest the manifest names, to show the image whole (`docker image
inspect` shows no layers otherwise); a host that has a layer only under another digest (a
compressed one it pulled) shows that after the load, and then gets every layer once.

Why not a registry (Kamal 2.8 runs one here and lets the host pull through an SSH port
forward; unregistry's `docker pussh` runs one on the host, writing into its containerd, and
pushes through a forward): that needs a registry image or program on one side, a forwarded
port and, for a registry here, a push that gzips every new layer first; the host then fetches
blobs by their compressed digests, so a host that has a layer under another digest gets it
again there too. This needs nothing but docker and ssh on each side.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

# Prints, for each image on the host, the JSON list of its layers' diff IDs.
HOST_LAYERS = ("docker image ls --all --quiet --no-trunc | sort -u "
               "| xargs -r docker image inspect --format '{{json .RootFS.Layers}}'")
# What an image is, as `docker image inspect` shows it on either store: its layers, its
# creation time and platform, and its runtime config (a change of ENV or CMD alone makes no
# layer). Its ID is no part of it: on the containerd store that is a manifest's digest.
IDENTITY = "{{json .RootFS.Layers}} {{.Created}} {{.Os}}/{{.Architecture}} {{json .Config}}"

OCI_LAYOUT = "oci-layout"
LAYER_TYPES = {b"\x1f\x8b": "application/vnd.oci.image.layer.v1.tar+gzip",
               b"\x28\xb5\x2f\xfd": "application/vnd.oci.image.layer.v1.tar+zstd"}
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain ID of each layer: the first layer's diff ID, then sha256 of the chain below
    and the layer's diff ID (the image spec's definition)."""
    chains = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def host_chains(host_layers_output: str) -> set[str]:
    """Every chain ID the host's engine has, from the output of HOST_LAYERS."""
    have: set[str] = set()
    for line in host_layers_output.splitlines():
        line = line.strip()
        if line.startswith("["):
            have.update(chain_ids(json.loads(line)))
    return have


def identity(image: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", IDENTITY, image]


def same_image(here: str, there: str) -> bool:
    """Whether two IDENTITY lines say the same image. An image whose layers the engine cannot
    show (`null`: the containerd store lacking one of its blobs) is the same as none."""
    return bool(here.strip()) and not here.startswith("null") and here.strip() == there.strip()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_descriptor(path: str, size: int, head: bytes, diff_id: str) -> dict:
    """The OCI descriptor of a layer saved at PATH (SIZE bytes, starting with HEAD). A save
    names a blob by its digest (blobs/sha256/HEX); Engine 20.10's names a layer ID/layer.tar,
    always uncompressed, so its digest is the layer's diff ID."""
    folder, _, name = path.rpartition("/")
    digest = f"sha256:{name}" if folder == "blobs/sha256" else diff_id
    return {"mediaType": LAYER_TYPES.get(head[:4], LAYER_TYPES.get(head[:2], LAYER_TAR)),
            "digest": digest, "size": size}


def qualified(image: str) -> str:
    """IMAGE's full name, as the containerd store keeps it: docker.io/library/hello:1."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if slash else f"docker.io/library/{image}"


def blob(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


@dataclass(frozen=True)
class Load:
    """What `docker load` on the host gets: FILES written here (name: bytes) and LAYERS, the
    layers sent (name in the archive: file in the save), COUNT distinct layers of the image."""
    files: dict[str, bytes]
    layers: dict[str, str]
    count: int


def load(image: str, manifest: list[dict], config: bytes, members: dict[str, tuple[int, bytes]],
         have: set[str]) -> Load:
    """The archive that makes IMAGE whole on a host whose engine has the chains HAVE. MANIFEST
    is the save's manifest.json (one image), CONFIG that image's config as saved, MEMBERS
    {file: (size, first bytes)} of the save's layer files."""
    (entry,) = manifest
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    if len(diff_ids) != len(entry["Layers"]):
        raise ValueError("the saved image's manifest and config disagree on its layers")
    descriptors = [layer_descriptor(path, *members[path], diff_id) for path, diff_id in zip(entry["Layers"], diff_ids)]
    needed = {blob(d["digest"]): path for path, d, chain in zip(entry["Layers"], descriptors, chain_ids(diff_ids))
              if chain not in have}
    config_descriptor = {"mediaType": CONFIG_TYPE, "digest": sha256(config), "size": len(config)}
    image_manifest = _json({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "config": config_descriptor,
                            "layers": descriptors})
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else "latest"
    index = {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [{
        "mediaType": MANIFEST_TYPE, "digest": sha256(image_manifest), "size": len(image_manifest),
        "annotations": {"io.containerd.image.name": qualified(image), "org.opencontainers.image.ref.name": tag}}]}
    legacy = [{"Config": blob(config_descriptor["digest"]), "RepoTags": [image],
               "Layers": [blob(d["digest"]) for d in descriptors]}]
    files = {OCI_LAYOUT: _json({"imageLayoutVersion": "1.0.0"}), "index.json": _json(index),
             "manifest.json": _json(legacy), blob(config_descriptor["digest"]): config,
             blob(sha256(image_manifest)): image_manifest}
    return Load(files, needed, len({d["digest"] for d in descriptors}))


def _json(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def linked(path: str, linkname: str) -> str:
    """The file a symbolic link at PATH in a save points to (Engine 20.10 links a layer saved
    twice to its first file)."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), linkname))


def save(image: str, output) -> list[str]:
    """IMAGE as a tar file at OUTPUT: a file, not a pipe, since the manifest that says which
    file is which layer comes last in the stream, and a file can be read in any order."""
    return ["docker", "save", "--output", str(output), image]
