"""Resource checkers, one module each; every module registers itself in `preflight.CHECKERS`."""
