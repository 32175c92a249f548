"""Plans for shipping an image to a host without a registry: which layers the host lacks.

`docker save` writes an image as a tar: a manifest.json naming the image's config and one
file per layer, in order. `docker load` looks each layer up by its chain ID (the layer and
every layer under it) and reads the layer's file only when the engine lacks that chain. So a
save with the files of the layers the host has left out loads as the whole image there, and a
code-only change sends its last layers alone (kilobytes, not the whole image).

Why not a registry tunnelled over SSH (Kamal's way): it needs a registry image or binary on one
side and a forwarded port, and pushes every layer into a local registry first; this needs
nothing but docker and ssh on each side. A host whose engine uses the containerd image store
loads through containerd, which wants every blob: it gets the whole image.
"""
from __future__ import annotations

import hashlib
import json

# Prints, for each image on the host, the JSON list of its layers' diff IDs.
HOST_LAYERS = ("docker image ls --all --quiet --no-trunc | sort -u "
               "| xargs -r docker image inspect --format '{{json .RootFS.Layers}}'")
# Prints the driver status of the host's engine: the containerd image store says so there.
STORE = "docker info --format '{{json .DriverStatus}}'"


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


def uses_containerd_store(driver_status_output: str) -> bool:
    return "io.containerd.snapshotter" in driver_status_output


def layers_to_leave_out(manifest: list[dict], config: dict, have: set[str]) -> dict[str, str]:
    """{file in the save: diff ID} of the layers whose chain the host has already. MANIFEST is
    the save's manifest.json (one image), CONFIG that image's config."""
    (entry,) = manifest
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(entry["Layers"]):
        raise ValueError("the saved image's manifest and config disagree on its layers")
    chains = chain_ids(diff_ids)
    needed = {path for path, chain in zip(entry["Layers"], chains) if chain not in have}
    # A file two layers share (an empty layer, say) stays if any of them is needed.
    return {path: diff_id for path, diff_id, chain in zip(entry["Layers"], diff_ids, chains)
            if chain in have and path not in needed}


def image_id(image: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", image]


def save(image: str, output) -> list[str]:
    """IMAGE as a tar file at OUTPUT: a file, not a pipe, since the manifest that says which
    file is which layer comes last in the stream, and a file can be read in any order."""
    return ["docker", "save", "--output", str(output), image]
