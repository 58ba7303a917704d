"""`python3 -m poseloop_torch [--probe]`: the engine process of PROTOCOL.md."""
import os
import sys

from . import protocol


def main(argv):
    # Before torch is imported: whatever prints to stdout from here on goes to stderr.
    out = protocol.claim_stdout()
    try:
        from . import engine
    except Exception as error:  # noqa: BLE001 - a broken torch is an answer, not a crash
        import traceback

        traceback.print_exc(file=sys.stderr)
        protocol.write_message(out, {"type": "hello", "protocol": protocol.PROTOCOL_VERSION, "error": f"cannot import torch: {type(error).__name__}: {error}"})
        return 3
    # Under torchrun rank 0 alone speaks; the hello goes out before the process group forms.
    if os.environ.get("RANK", "0") == "0":
        protocol.write_message(out, engine.hello())
    if "--probe" in argv:
        return 0
    dist_ctx = engine.Distributed()
    server = engine.Server(dist_ctx, sys.stdin.buffer, out)
    server.install_signals()
    try:
        return server.serve()
    finally:
        # The loader's worker processes go with the engine, not at interpreter teardown.
        if server.job is not None:
            server.job.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
