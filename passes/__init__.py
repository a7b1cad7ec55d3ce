"""Graph passes: functions over the IR, each in its own module (see passes.manager)."""
