"""The `Layer` base class and the mechanisms it uses (tracking, the call pipeline, copies, ...)."""
