"""ComfyUI's two workflow formats, for the example workflows: API prompts and UI graphs.

The UI graph is what ComfyUI's frontend saves and loads (nodes with positions, sockets, links, and widget
values in the order of the node's widget inputs); the API prompt is what it sends the server for a run.
`ui_to_api` follows the frontend's rules to turn a graph into a prompt; `api_to_ui` lays a prompt out as a
graph. `python tests/comfyui_workflows.py` (with COMFYUI_PATH set) writes the UI files from the API files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _inputs(node_class: Any) -> list[tuple[str, Any, dict]]:
    types = node_class.INPUT_TYPES()
    return [(name, spec[0], spec[1] if len(spec) > 1 else {})
            for group in ("required", "optional") for name, spec in types.get(group, {}).items()]


def _is_widget(kind: Any, options: dict) -> bool:
    return (isinstance(kind, list) or str(kind) in WIDGET_TYPES) and not options.get("forceInput")


def _frontend_extras(options: dict) -> list[Any]:
    """Values the frontend stores after a widget's own: the seed's control mode, an upload button."""
    extras = ["fixed"] if options.get("control_after_generate") else []
    if any(key.endswith("_upload") and value for key, value in options.items()):
        extras.append("image")
    return extras


def _outputs(node_class: Any) -> list[tuple[str, str]]:
    types = [str(t) for t in node_class.RETURN_TYPES]
    names = getattr(node_class, "RETURN_NAMES", None) or types
    return list(zip(names, types, strict=True))


def ui_to_api(graph: dict[str, Any], classes: dict[str, Any]) -> dict[str, Any]:
    """The API prompt the frontend makes of a UI graph."""
    links = {link[0]: link for link in graph["links"]}
    prompt = {}
    for node in graph["nodes"]:
        cls = classes[node["type"]]
        values = list(node.get("widgets_values", []))
        inputs: dict[str, Any] = {}
        for name, kind, options in _inputs(cls):
            if _is_widget(kind, options):
                inputs[name] = values.pop(0)
                for extra in _frontend_extras(options):
                    if values.pop(0) != extra:
                        raise ValueError(f"node {node['id']}: {name} lacks its {extra!r} widget value")
        if values:
            raise ValueError(f"node {node['id']} ({node['type']}) has {len(values)} widget values too many")
        for socket in node.get("inputs", []):
            if socket.get("link") is not None:
                _, origin, slot, target, _, _ = links[socket["link"]]
                if target != node["id"]:
                    raise ValueError(f"link {socket['link']} does not end at node {node['id']}")
                inputs[socket["name"]] = [str(origin), slot]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node.get("title", node["type"])}}
    return prompt


def api_to_ui(prompt: dict[str, Any], classes: dict[str, Any]) -> dict[str, Any]:
    """A UI graph of an API prompt: nodes in columns by their distance from the loaders."""
    depth: dict[str, int] = {}

    def level(node_id: str) -> int:
        if node_id not in depth:
            sources = [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
            depth[node_id] = 1 + max((level(s) for s in sources), default=-1)
        return depth[node_id]

    order = sorted(prompt, key=lambda i: (level(i), int(i)))
    nodes, links, rows = {}, [], {}
    for rank, node_id in enumerate(order):
        entry, cls = prompt[node_id], classes[prompt[node_id]["class_type"]]
        row = rows[level(node_id)] = rows.get(level(node_id), -1) + 1
        widgets, sockets = [], []
        for name, kind, options in _inputs(cls):
            if _is_widget(kind, options):
                widgets += [entry["inputs"][name], *_frontend_extras(options)]
            else:
                sockets.append({"name": name, "type": "COMBO" if isinstance(kind, list) else str(kind), "link": None})
        nodes[node_id] = {
            "id": int(node_id), "type": entry["class_type"], "pos": [40 + 380 * level(node_id), 40 + 260 * row],
            "size": [340, 200], "flags": {}, "order": rank, "mode": 0, "inputs": sockets,
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": s} for s, (n, t) in enumerate(_outputs(cls))],
            "title": entry.get("_meta", {}).get("title", entry["class_type"]),
            "properties": {"Node name for S&R": entry["class_type"]}, "widgets_values": widgets,
        }
    for node_id in order:
        for slot, socket in enumerate(nodes[node_id]["inputs"]):
            source = prompt[node_id]["inputs"].get(socket["name"])
            if isinstance(source, list):
                origin = nodes[source[0]]
                link_id = len(links) + 1
                links.append([link_id, int(source[0]), source[1], int(node_id), slot,
                              origin["outputs"][source[1]]["type"]])
                socket["link"] = link_id
                origin["outputs"][source[1]]["links"].append(link_id)
    return {"last_node_id": max(int(i) for i in prompt), "last_link_id": len(links),
            "nodes": [nodes[i] for i in order], "links": links, "groups": [], "config": {},
            "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}


def main() -> None:
    import asyncio
    import tempfile

    import comfyui_env
    from t2vzero.comfy.install import api_workflows, install

    comfyui_env.import_comfyui(comfyui_env.comfyui_dir())
    import nodes

    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "custom_nodes").mkdir()
        asyncio.run(nodes.load_custom_node(str(install(root))))
    for api in api_workflows():
        graph = api_to_ui(json.loads(api.read_text()), nodes.NODE_CLASS_MAPPINGS)
        out = api.with_name(api.name.replace(".api.json", ".json"))
        out.write_text(json.dumps(graph, indent=1) + "\n")
        print("wrote", out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    main()
