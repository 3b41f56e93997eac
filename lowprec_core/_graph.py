"""Small graph helpers shared by every module that reads or edits an ONNX graph."""

from __future__ import annotations

import heapq

import onnx


class Names:
    """Makes every new name once, deterministically, and never reuses one. `reserved`: names
    of enclosing graphs, which a branch body must not shadow."""

    def __init__(self, graph: onnx.GraphProto, reserved: frozenset[str] = frozenset()) -> None:
        self.taken: set[str] = {n.name for n in graph.node} | set(reserved)
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


def dim_sizes(dims) -> list[int | str]:
    """A shape's sizes: the number where fixed, else its name, else "?" (0 or unset)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in dims]


def input_sizes(graph: onnx.GraphProto) -> dict[str, list[int | str]]:
    """The graph's inputs (initializers listed as inputs left out) and their sizes (dim_sizes)."""
    inits = {init.name for init in graph.initializer}
    return {value.name: dim_sizes(value.type.tensor_type.shape.dim) for value in graph.input if value.name not in inits}


def shown_sizes(sizes) -> str:
    """Sizes as errors show them: [batch, 576]."""
    return "[" + ", ".join(map(str, sizes)) + "]"


def initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in graph.initializer}


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The bodies of an If, Loop or Scan (any graph-valued attribute)."""
    return [sub for attribute in node.attribute for sub in _graphs(attribute)]


def _graphs(attribute: onnx.AttributeProto) -> list[onnx.GraphProto]:
    kind = attribute.type  # an int field: far cheaper than HasField on every attribute of every node
    if kind == onnx.AttributeProto.GRAPH:
        return [attribute.g]
    if kind == onnx.AttributeProto.GRAPHS:
        return list(attribute.graphs)
    if kind == onnx.AttributeProto.UNDEFINED:  # very old writers left the type out
        return [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]
    return []


def if_bodies(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, str, onnx.GraphProto]]:
    """(If node, "then_branch" | "else_branch", body) for the If nodes of `graph` itself."""
    return [(node, attr.name, attr.g) for node in graph.node if node.op_type == "If" for attr in node.attribute if attr.HasField("g")]


def all_graphs(graph: onnx.GraphProto):
    """`graph` and every body nested in it, depth first."""
    yield graph
    for node in graph.node:
        for sub in subgraphs(node):
            yield from all_graphs(sub)


def all_nodes(graph: onnx.GraphProto):
    """Every node of `graph` and of the bodies nested in it, depth first."""
    for node in graph.node:
        yield node
        for sub in subgraphs(node):
            yield from all_nodes(sub)


def all_tensors(graph: onnx.GraphProto):
    """Every tensor `graph` holds: its initializers and its nodes' tensor attributes (Constant
    values), its bodies' included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
        for sub in subgraphs(node):
            yield from all_tensors(sub)


def names_defined_here(graph: onnx.GraphProto) -> set[str]:
    """The value names `graph` itself defines (not its nested bodies)."""
    names = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    return names | {out for node in graph.node for out in node.output if out}


def names_defined(graph: onnx.GraphProto) -> set[str]:
    """Every value name `graph` and its nested bodies define: inputs, initializers, node outputs."""
    names = names_defined_here(graph)
    for node in graph.node:
        for sub in subgraphs(node):
            names |= names_defined(sub)
    return names


def all_names(graph: onnx.GraphProto) -> frozenset[str]:
    """Every node and value name in `graph` and its nested bodies (what a new name must avoid)."""
    return frozenset(names_defined(graph) | names_read(graph) | {node.name for node in all_nodes(graph)})


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name a node reads, subgraphs (If/Loop/Scan bodies) included."""
    names = {o.name for o in graph.output}
    for node in graph.node:
        names.update(node.input)
        for sub in subgraphs(node):
            names |= names_read(sub)
    return names


def rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Renames values in place, wherever `graph` and its bodies define or read them."""
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
        for sub in subgraphs(node):
            rename(sub, mapping)  # an inner body reads the outer name (it cannot define it again)


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Removes the initializers no node reads, in place: the others are not copied (extending a
    repeated field copies every tensor, a model's weights whole)."""
    used = names_read(graph)
    for index in reversed([i for i, init in enumerate(graph.initializer) if init.name not in used]):
        del graph.initializer[index]


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


def body_model(model: onnx.ModelProto, node: onnx.NodeProto, attribute_name: str) -> tuple[onnx.ModelProto, list[str]]:
    """An If body of `model.graph` as a model of its own, for planning and quantizing it alone.

    Outer values the body reads become the model's inputs (typed where the outer graph knows
    them). An outer initializer that only this body reads becomes its initializer, so its
    layer has a constant weight; one read elsewhere too stays an input (its layer stays float:
    a quantized copy inside the body could not keep its name). Returns the model and the
    names of the initializers it took over (`put_body` moves them into the body)."""
    graph = model.graph
    body = next(attr.g for attr in node.attribute if attr.name == attribute_name)
    inits = initializers(graph)
    elsewhere = {o.name for o in graph.output}  # what the outer graph reads, this body aside
    for other in graph.node:
        elsewhere.update(other.input)
        for attr in other.attribute:
            if not (other is node and attr.name == attribute_name):
                for sub in _graphs(attr):
                    elsewhere |= names_read(sub)
    types = {v.name: v for v in (*graph.input, *graph.value_info, *graph.output)}
    free = sorted(names_read(body) - names_defined(body) - {""})
    owned = [name for name in free if name in inits and name not in elsewhere]
    sub = onnx.GraphProto()
    sub.CopyFrom(body)
    sub.initializer.extend(inits[name] for name in owned)
    for name in free:
        if name not in owned:
            sub.input.append(types[name] if name in types else onnx.ValueInfoProto(name=name))
    out = onnx.helper.make_model(sub, opset_imports=model.opset_import, ir_version=model.ir_version)
    return out, owned


def put_body(model: onnx.ModelProto, node: onnx.NodeProto, attribute_name: str, body: onnx.ModelProto, owned: list[str]) -> None:
    """Writes a quantized body (from `body_model`) back into `node`; the outer initializers
    it took over leave the outer graph."""
    graph = body.graph
    new = onnx.GraphProto()
    new.CopyFrom(graph)
    del new.input[:]  # an If body has none: the values it read stay outer names
    for attr in node.attribute:
        if attr.name == attribute_name:
            attr.g.CopyFrom(new)
    if owned:
        kept = [init for init in model.graph.initializer if init.name not in set(owned)]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
