"""Small graph helpers shared by every module that reads or edits an ONNX graph."""

from __future__ import annotations

import heapq

import onnx


class Names:
    """Makes every new name once, deterministically, and never reuses one."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.taken: set[str] = {n.name for n in graph.node}
        self.taken |= {t for n in graph.node for t in (*n.input, *n.output)}
        self.taken |= {i.name for i in graph.initializer} | {i.name for i in graph.input}

    def new(self, base: str) -> str:
        name, index = base, 1
        while name in self.taken:
            name, index = f"{base}_{index}", index + 1
        self.taken.add(name)
        return name


def attribute(node: onnx.NodeProto, name: str, default=None):
    """The value of a node's attribute `name`, or `default` when the node does not set it."""
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else onnx.helper.get_attribute_value(found)


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of an If, Loop or Scan (any graph-valued attribute)."""
    return [sub for attribute in node.attribute for sub in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs)]


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node reads, subgraphs (If/Loop/Scan bodies) included."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for sub in subgraphs(node):
            names |= names_read(sub)
    return names


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = names_read(graph)
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> nodes that read it, directly or from inside one of their subgraphs."""
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        implicit = set().union(*(names_read(sub) for sub in subgraphs(node)))
        for name in dict.fromkeys([*node.input, *sorted(implicit)]):
            if name:
                found.setdefault(name, []).append(node)
    return found


def set_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    kept = [onnx.NodeProto() for _ in nodes]
    for copy, node in zip(kept, nodes):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(kept)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Kahn's algorithm, ties broken by position, so the order is deterministic. A node with
    subgraphs (If, Loop, Scan) also waits for every outer tensor its subgraphs read."""
    nodes = list(graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        reads = set(node.input).union(*(names_read(sub) for sub in subgraphs(node)))
        deps = {producer[name] for name in reads if name in producer and producer[name] != i}
        waiting[i] = len(deps)
        for dep in deps:
            readers.setdefault(dep, []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for reader in readers.get(i, []):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    if len(order) != len(nodes):
        raise RuntimeError("graph has a cycle after an edit; this is a lowprec bug")
    set_nodes(graph, [nodes[i] for i in order])
