"""The graph IR.

A `Graph` is one model or one block specialization. Nodes are kept in
insertion order, which is a topological order (a node is added after its
inputs); `graph.nx` is the networkx MultiDiGraph of the same nodes and edges,
made on first use (so `dslc check` does not pay for importing networkx) and
kept in step with every node added after that.

Layers with state are `Instance`s: a node applies an instance, and several
nodes may apply the same instance (shared weights). A block call is a node
whose instance holds the block's own `Graph`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from .dims import GuardList
from .limits import MAX_OPERATIONS, LimitError
from .types import TensorType
from .values import Ref, TensorValue

NODE_KINDS = ("op", "input", "param", "weight", "call", "buffer")


@dataclass
class Instance:
    """A layer, block or learnable tensor that owns parameters."""
    id: str
    kind: str                         # layer | block | param | buffer
    op: object = None                 # the OpDef of a layer
    args: dict = field(default_factory=dict)   # constructor arguments (layer) / block arguments
    user_name: str | None = None      # from `as name` or `param name`
    name: str = ""                    # attribute name, set by the naming pass
    graph: "Graph | None" = None      # a block's specialization; a buffer's value (a graph of kind `buffer`)
    init: object = None               # a param's initializer (name, args)
    shape: tuple = ()                 # a param's shape
    span: object = None
    folded: object = None             # a FoldedNorm: the batch norm folded into this layer (passes, -O2)
    inits: dict = field(default_factory=dict)  # a layer's weight name -> InitSpec (`init=` in its call)
    container: str | None = None      # the Container it is an element of (`repeat depth as h`)
    index: int = 0                    # its place there: its name is `h.3` (`3` in an nn.Sequential block)
    # a name from a template, `as "layer{i}"`: its text and values ("layer", 3); in a list, its key
    key: tuple = ()
    arg_spans: dict = field(default_factory=dict, compare=False)   # argument name -> the span of its expression in the call

    def weights(self) -> dict:
        if self.kind == "layer":
            return self.op.weight_shapes(self.args)
        if self.kind == "param":
            return {"": self.shape}
        return {}

    def buffers(self) -> dict:
        """Buffer name -> (shape, dtype): a layer's running statistics, or a `buffer`'s own tensor."""
        if self.kind == "buffer":
            return {"": (self.shape, self.graph.type_of(self.graph.outputs[0][1]).dtype)}
        return self.op.buffer_shapes(self.args) if self.kind == "layer" else {}


@dataclass
class Container:
    """Modules applied in turn to the running value, kept as one `nn.ModuleList` keyed 0, 1, 2, ...
    (`h.0.attn.weight`): the instances a loop made, one per pass (frontend/containers.py).

    `uniform_from`: 0 when every element is made alike, so the count stays a constructor argument
    (`nn.ModuleList([Block(dim) for _ in range(depth)])`); 1 when every one but the first is
    (`[Block(64, 128, 2), *[Block(128, 128, 1) for _ in range(1, blocks)]]`); None when the
    elements are listed one by one. `sequential`: the list is its block's whole body, and the block
    an `nn.Sequential` of the elements, keyed by position directly (`layer1.0.conv1.weight`)."""
    name: str
    instances: list                   # instance ids, in order
    count: object                     # the loop's count (an int, or a Size that remembers its parameter)
    uniform_from: int | None
    user_name: str | None = None      # from `repeat n as name`, `for ... as name`
    sequential: bool = False
    # a dense list (DenseNet's block): each element reads the running value, and its result is
    # concatenated to it along this dim (`x = torch.cat([x, layer(x)], dim=1)`); None for a chain
    concat_dim: int | None = None
    # a dense list's last value typed for any count (`in_channels + layers * growth`): what the
    # block returns to its callers, where its own nodes are typed for the count that ran
    result: tuple | None = None       # (Ref, TensorType)
    # the elements' keys when a template named them (`as "encoder_layer_{i}"`), in place of 0, 1, ...;
    # `key_pattern` writes element i's key for any count: text, and an int c for `i + c`
    keys: list | None = None
    key_pattern: tuple | None = None


@dataclass
class Node:
    id: str
    kind: str                          # op | input | param | weight | call | buffer
    outputs: list[TensorType]
    inputs: list[Ref] = field(default_factory=list)
    op: object = None                  # OpDef for kind "op"
    args: dict = field(default_factory=dict)
    instance: str | None = None        # Instance id (layers with state, blocks, params)
    span: object = None
    names: list = field(default_factory=list)  # user-bound name of each output, or None
    attr: str | None = None            # weight nodes: which weight (`wte.weight`)
    region: tuple | None = None        # (loop id, iteration, loop kind) of the innermost loop that made it

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise ValueError(f"bad node kind {self.kind}")
        if not self.names:
            self.names = [None] * len(self.outputs)


@dataclass(frozen=True)
class Failure:
    """Where evaluation stopped: the failing call's text, its inputs and the error, for diagrams."""
    label: str
    inputs: tuple
    message: str


@dataclass
class Graph:
    name: str
    kind: str                                   # model | block | buffer (a buffer's value, ir/graph.py Instance)
    params: dict = field(default_factory=dict)  # parameter values of this specialization
    param_types: dict = field(default_factory=dict)  # declared types (for signatures)
    param_defaults: dict = field(default_factory=dict)  # the declared defaults' values
    inputs: list = field(default_factory=list)   # (name, Ref)
    outputs: list = field(default_factory=list)  # (name, Ref)
    nodes: dict = field(default_factory=dict)
    instances: dict = field(default_factory=dict)
    guards: list = field(default_factory=lambda: GuardList())
    atom_env: dict = field(default_factory=dict)  # values of the Param/InDim atoms in its sizes
    failures: list = field(default_factory=list)  # calls that failed (a partial graph keeps them)
    # set by optimization passes (dslc/passes); the defaults are the unoptimized program's
    dropped: list = field(default_factory=list)   # names of instances with weights the passes removed
    opt_level: int = 0                            # the -O level a model was optimized at
    inference: bool = False                       # -O2: the model runs in eval mode only
    memory_format: str | None = None              # "channels_last" (--channels-last)
    region: tuple | None = None                   # the loop iteration being evaluated (see Node.region)
    containers: dict = field(default_factory=dict)  # name -> Container (loops kept as module lists)
    decl: object = None
    # `for` loops over a list parameter as they ran (frontend/containers.py ListLoop): the generated
    # PyTorch may build their layers in a Python loop over the list (backends/loops.py)
    list_loops: list = field(default_factory=list, compare=False)
    # a condition bound to a name (`use_res_connect = stride == 1 and x.shape[1] == out`): its span ->
    # (the name, the condition as it held or failed at each evaluation, frontend/conditions.py); None
    # where the span was evaluated to different conditions (in a loop). The generated class keeps such
    # a decision as `self.use_res_connect` where its forward tests it (backends/variants.py)
    named_conditions: dict = field(default_factory=dict, compare=False)
    unrolled: int = 0                             # nodes, with every block call counted as its body's
    _nx: object = None
    _counter: int = 0
    _inst_counter: int = 0

    # construction
    def add(self, kind: str, outputs: list[TensorType], inputs: list[Ref] = (), **kw) -> Node:
        # A block specialization is made once and called many times, so a spec can describe far
        # more layers than it evaluates (blocks that call the one below twice, 20 levels deep):
        # the count that generated code and diagrams would hold is bounded here.
        self.unrolled += 1 + (kw["args"]["graph"].unrolled if kind == "call" else 0)
        if self.unrolled > MAX_OPERATIONS:
            raise LimitError("E0703", f"`{self.name}` unrolls to more than {MAX_OPERATIONS:,} layers and "
                             "operations", help="loops, repeats and blocks unroll at compile time: make them "
                             "smaller")
        self._counter += 1
        node = Node(f"n{self._counter}", kind, list(outputs), list(inputs), region=self.region, **kw)
        self.nodes[node.id] = node
        if self._nx is not None:
            _add_to_nx(self._nx, node)
        return node

    def mark(self) -> int:
        """A point in the graph's construction, for `added_since`."""
        return self._counter

    def added_since(self, mark: int) -> list[str]:
        """The ids of the nodes added after `mark` that are still there, in order: a loop's pass reads
        what it made without listing the whole graph (20,000 passes took 35 s that way)."""
        ids = (f"n{k}" for k in range(mark + 1, self._counter + 1))
        return [i for i in ids if i in self.nodes]

    @property
    def nx(self):
        """The networkx MultiDiGraph of this graph (edges carry the output index and input slot)."""
        if self._nx is None:
            import networkx as nx
            g = nx.MultiDiGraph()
            for node in self.nodes.values():
                _add_to_nx(g, node)
            self._nx = g
        return self._nx

    def new_instance(self, kind: str, **kw) -> Instance:
        self._inst_counter += 1
        inst = Instance(f"i{self._inst_counter}", kind, **kw)
        self.instances[inst.id] = inst
        return inst

    def values(self, node: Node) -> list[TensorValue]:
        return [TensorValue(Ref(node.id, i), t, node.span) for i, t in enumerate(node.outputs)]

    # queries
    def type_of(self, ref: Ref) -> TensorType:
        return self.nodes[ref.node].outputs[ref.index]

    def result_type(self, ref: Ref) -> TensorType:
        """A result's type as the block's callers see it: a dense list's for any count (Container.result)."""
        for c in self.containers.values():
            if c.result is not None and c.result[0] == ref:
                return c.result[1]
        return self.type_of(ref)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def users(self, node_id: str) -> list[str]:
        return list(dict.fromkeys(self.nx.successors(node_id)))

    def topological(self) -> list[Node]:
        import networkx as nx
        return [self.nodes[n] for n in nx.lexicographical_topological_sort(
            self.nx, key=lambda n: int(n[1:]))]

    def instance_of(self, node: Node) -> Instance | None:
        return self.instances.get(node.instance) if node.instance else None

    def input_types(self) -> dict:
        return {name: self.type_of(ref) for name, ref in self.inputs}

    def output_types(self) -> dict:
        return {name: self.type_of(ref) for name, ref in self.outputs}

    def verify(self) -> None:
        """Structural invariants every pass must keep."""
        seen = set()
        for node in self.nodes.values():
            for ref in node.inputs:
                if ref.node not in seen:
                    raise AssertionError(f"{node.id} uses {ref.node} before it is defined")
                if ref.index >= len(self.nodes[ref.node].outputs):
                    raise AssertionError(f"{node.id} uses a missing output of {ref.node}")
            if node.instance and node.instance not in self.instances:
                raise AssertionError(f"{node.id} applies unknown instance {node.instance}")
            seen.add(node.id)
        for _, ref in self.outputs:
            if ref.node not in self.nodes:
                raise AssertionError(f"output refers to missing node {ref.node}")
        import networkx as nx
        if not nx.is_directed_acyclic_graph(self.nx):
            raise AssertionError("the graph has a cycle")


@dataclass(frozen=True)
class FoldedNorm:
    """A batch norm folded into the convolution or linear layer before it (inference, -O2).

    The layer's weights become W * s and its bias (b - mean) * s + beta per output channel,
    where s = gamma / sqrt(var + eps). `norm` is the batch norm's instance, `bias` the
    layer's own `bias` argument before folding (the folded layer always has a bias)."""
    norm: Instance
    bias: bool


def _add_to_nx(g, node: Node) -> None:
    g.add_node(node.id)
    for slot, ref in enumerate(node.inputs):
        g.add_edge(ref.node, node.id, index=ref.index, slot=slot)
