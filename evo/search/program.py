"""Static facts about a program's source: does it parse and compile, what may it import, its identity.

These are the cheap first stages of FILTERANDEVAL. They run in the search process on the *text*
only (``ast``/``compile`` never execute the code); everything that executes it runs in the sandbox.
The allowlist is a filter, not the security boundary: the sandbox is.
"""

from __future__ import annotations

import ast
import hashlib
from typing import Optional, Sequence

from evo import outcome

# Builtins and attributes that let code escape the model-definition language.
BANNED_NAMES = frozenset({
    "eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "getattr", "setattr",
    "delattr", "input", "breakpoint", "exit", "quit", "help", "memoryview", "__builtins__", "__loader__",
    "__spec__",
})
ALLOWED_DUNDERS = frozenset({"__call__", "__init__", "__name__", "__doc__"})


def check_static(code: str, allowed_imports: Sequence[str], entry: str = "Model") -> Optional[tuple[str, str]]:
    """Return ``(status, reason)`` when the program fails a static check, else None.

    ``entry`` is the top-level class or function every program of the task defines."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return outcome.SYNTAX_ERROR, f"line {exc.lineno}: {exc.msg}"
    try:  # ast.parse accepts some code that compile() rejects (e.g. a repeated keyword argument)
        compile(code, "child.py", "exec")
    except (SyntaxError, ValueError) as exc:
        return outcome.SYNTAX_ERROR, f"line {getattr(exc, 'lineno', '?')}: {getattr(exc, 'msg', exc)}"
    allowed = set(allowed_imports)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                return outcome.FORBIDDEN, f"line {node.lineno}: relative import"
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            if not any(name == a or name.startswith(a + ".") for a in allowed):
                return outcome.FORBIDDEN, f"line {node.lineno}: import of {name!r} is not allowed (allowed: {', '.join(sorted(allowed))})"
        if isinstance(node, ast.Name) and node.id in BANNED_NAMES:
            return outcome.FORBIDDEN, f"line {node.lineno}: use of {node.id!r} is not allowed"
        if isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr not in ALLOWED_DUNDERS:
            return outcome.FORBIDDEN, f"line {node.lineno}: attribute {node.attr!r} is not allowed"
    if entry_node(tree, entry) is None:
        return outcome.BUILD_ERROR, f"the program defines no top-level `{entry}`"
    return None


def entry_node(tree: ast.Module, entry: str):
    """The top-level class or function named ``entry`` in a parsed program, or None."""
    defs = (ast.ClassDef, ast.FunctionDef)
    return next((n for n in tree.body if isinstance(n, defs) and n.name == entry), None)


class _StripDocstrings(ast.NodeTransformer):
    def _strip(self, node):
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    visit_Module = visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _strip


def code_hash(code: str) -> str:
    """Identity of a program: sha256 of its AST without docstrings, comments or formatting.

    Two samples that differ only in whitespace, comments or docstrings are the same program and
    are evaluated once. Code that does not parse is hashed as text (after stripping blank ends)."""
    try:
        tree = _StripDocstrings().visit(ast.parse(code))
        text = ast.dump(tree, annotate_fields=False, include_attributes=False)
    except SyntaxError:
        text = "\n".join(line.rstrip() for line in code.strip().splitlines())
    return hashlib.sha256(text.encode()).hexdigest()


def unparse_definition(node: ast.AST) -> str:
    """``ast.unparse`` of a class or function, without the blank line it puts after a class header
    (the prefill, like a human, continues right below the header)."""
    header, sep, rest = ast.unparse(node).partition("\n")
    return header + sep + (rest[1:] if rest.startswith("\n") else rest)


def entry_source(code: str, entry: str = "Model") -> str:
    """The ``entry`` class or function of a program, as written: what a prompt shows of a parent
    (the imports are shared by all programs)."""
    node = entry_node(ast.parse(code), entry)
    if node is None:
        raise ValueError(f"no top-level {entry} in program")
    return "\n".join(code.splitlines()[first_line(node):node.end_lineno]).rstrip()


def first_line(node: ast.AST) -> int:
    """0-based index of a definition's first line, its decorators included."""
    return min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
