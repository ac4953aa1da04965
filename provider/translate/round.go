package translate

import "math"

// roundCPU rounds a vCPU figure to the milli-core, avoiding 0.30000000004.
func roundCPU(v float64) float64 { return math.Round(v*1000) / 1000 }
