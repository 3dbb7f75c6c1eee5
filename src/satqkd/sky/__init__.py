"""Where the photons go: orbit and pass geometry, optical link budget, tracking loop, polarization frame."""
