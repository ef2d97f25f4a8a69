"""Face swappers (INSwapper and the classical warp) and source/target face pairing."""
