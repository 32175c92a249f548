"""What the property tests feed the validation layer: any project name, port, body size and
database names, as a config/stack.toml would hold them; `accepted` gives the Stack, or None
when the layer refuses the input (in one line: a reserved or too long name)."""
from hypothesis import strategies as st

from tasks.errors import StackError
from tasks.source import values
from tasks.source.stack import loads

INPUTS = {
    "name": st.from_regex(values.PROJECT, fullmatch=True),
    "port": st.integers(1, 65535),
    "size": st.from_regex(values.BODY_SIZE, fullmatch=True),
    "databases": st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True), min_size=1, max_size=4,
                          unique=True),
}


def accepted(name, port, size, databases):
    text = (f'[project]\nname = "{name}"\nhttp_port = {port}\nclient_max_body_size = "{size}"\n'
            + "".join(f'\n[[databases]]\nname = "{db}"\n' for db in databases))
    try:
        return loads(text)
    except StackError:
        return None
