"""PoseLoop's PyTorch training engine: the zoo models in PyTorch and the step engine the trainer drives over
the line protocol of PROTOCOL.md (`python3 -m poseloop_torch`)."""
