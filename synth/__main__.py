from synth.cli import run

run()
