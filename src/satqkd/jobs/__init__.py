"""Jobs a user runs, composed from the stages (network plans: :mod:`.plan`)."""
