"""`python3 -m poseloop_torch.torchrun ARGS` = `torchrun ARGS`, working around torch < 2.0 on Python ≥ 3.11.

torch 1.13's torchrun parses its default `--redirects 0` / `--tee 0` by iterating over the Std flag enum looking
for the value 0; Python 3.11 no longer yields a flag's zero member when iterating, so the lookup returns None
and torchrun dies in to_map() before starting a worker (Debian bookworm's python3-torch 1.13 with Python 3.11
does). The fix here looks the value up directly; on a torch without the bug this is plain torchrun.
"""
import sys


def main():
    from torch.distributed.elastic.multiprocessing import api

    original = api.Std.from_str

    def from_str(vm):
        parsed = original(vm)
        if parsed is None:  # only the buggy lookup of a plain number returns None
            return api.Std(int(vm))
        if isinstance(parsed, dict):
            return {rank: api.Std(int(vm.split(",")[i].split(":")[1])) if std is None else std for i, (rank, std) in enumerate(parsed.items())}
        return parsed

    api.Std.from_str = from_str
    from torch.distributed import run

    sys.argv[0] = "torchrun"
    run.main()


if __name__ == "__main__":
    main()
