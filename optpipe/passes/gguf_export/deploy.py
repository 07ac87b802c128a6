"""What a user runs to serve the artifact: a llama-server command and an Ollama Modelfile, written
beside model.gguf with the threads/batch/context it was measured with."""

from __future__ import annotations

import shlex
from pathlib import Path

SERVER_FILE = "llama-server.sh"
MODELFILE = "Modelfile"


def write_snippets(directory: Path, gguf_name: str, threads: int | None, batch: int, context: int, stop: list[str]) -> None:
    threads_arg = f" --threads {threads}" if threads else ""
    (directory / SERVER_FILE).write_text(
        "#!/bin/sh\n"
        "# Serve this candidate with llama.cpp's server (OpenAI-compatible API on :8080); the chat template\n"
        "# is read from the GGUF. Settings are those optpipe measured with.\n"
        f'cd "$(dirname "$0")" && exec llama-server -m {shlex.quote(gguf_name)}{threads_arg} '
        f'--batch-size {batch} --ctx-size {context} --jinja --port 8080 "$@"\n'
    )
    (directory / SERVER_FILE).chmod(0o755)
    lines = [
        "# Ollama: `ollama create NAME -f Modelfile` in this directory, then `ollama run NAME`.",
        "# Ollama reads the chat template from the GGUF metadata.",
        f"FROM ./{gguf_name}",
        f"PARAMETER num_ctx {context}",
        f"PARAMETER num_batch {batch}",
    ]
    if threads:
        lines.append(f"PARAMETER num_thread {threads}")
    lines += [f"PARAMETER stop {s!r}".replace("'", '"') for s in stop]
    (directory / MODELFILE).write_text("\n".join(lines) + "\n")
