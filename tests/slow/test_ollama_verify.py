"""`export ollama --verify RUN`: the model put into Ollama answers the run's cases like the trained model.

Ollama cannot be installed on the development machines; the stand-in (tests/ollama_standin.py) is made of Ollama's
own pieces — the Modelfile's TEMPLATE rendered by Go's text/template, the GGUF answered by llama.cpp, greedy, stopping
at the Modelfile's stop strings — behind the documented `/api/chat`, and the `ollama` command's `list`/`create`."""

from __future__ import annotations

import os


from ollama_standin import StandInOllama, build_go_renderer, install_fake_ollama_cli


def test_the_model_created_in_ollama_answers_like_the_trained_model(trained_run, tmp_path, run_studio, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_ollama_cli(bin_dir)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_OLLAMA_STORE": str(tmp_path / "store")}
    exported = run_studio("export", "gguf", trained_run, "--output", tmp_path / "out" / "bot.gguf", "--type", "q8_0")
    assert exported.returncode == 0, exported.stderr[-2000:]
    modelfile = tmp_path / "out" / "bot.Modelfile"
    renderer = build_go_renderer(tmp_path)

    with StandInOllama(renderer, {"support-bot": modelfile}) as ollama:
        checked = run_studio("export", "ollama", modelfile, "--name", "support-bot", "--verify", trained_run,
                             "--host", ollama.host, env=env)
        refused = run_studio("export", "ollama", modelfile, "--name", "support-bot", "--verify", trained_run,
                             "--host", ollama.host, env=env)

    assert checked.returncode == 0, checked.stderr[-3000:]
    verdict = checked.stdout.strip().splitlines()[-1]
    assert verdict.startswith("verify: ") and "Ollama (its chat API on this machine): support-bot" in verdict
    assert "10/10 replies identical" in verdict, verdict
    assert refused.returncode == 2 and "already has a model named 'support-bot'" in refused.stderr


def test_a_server_that_does_not_answer_is_no_score(trained_run, tmp_path, run_studio):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install_fake_ollama_cli(bin_dir)
    modelfile = tmp_path / "bot.Modelfile"
    (tmp_path / "bot.gguf").write_bytes(b"GGUF")
    modelfile.write_text("FROM ./bot.gguf\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_OLLAMA_STORE": str(tmp_path / "store")}

    done = run_studio("export", "ollama", modelfile, "--name", "bot", "--verify", trained_run,
                      "--host", "http://127.0.0.1:9", env=env)

    assert done.returncode == 1, done.stderr[-2000:]
    assert "--verify could not run" in done.stderr and "ollama serve" in done.stderr
    assert "identical" not in done.stdout
