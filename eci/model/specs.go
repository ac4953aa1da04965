package model

import (
	"fmt"
	"sort"
)

// Spec is a vCPU/memory shape ECI sells.
type Spec struct {
	CPU      float64 // vCPU
	MemoryGi float64 // GiB
}

func (s Spec) String() string {
	return fmt.Sprintf("%s-%sGi", trimFloat(s.CPU), trimFloat(s.MemoryGi))
}

// FormatFloat renders a vCPU or GiB figure without trailing zeros (0.5, 2).
func FormatFloat(f float64) string { return trimFloat(f) }

func trimFloat(f float64) string {
	s := fmt.Sprintf("%.2f", f)
	for s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	if s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}

// soldSpecs are the vCPU/memory combinations ECI sells in every region
// (Alibaba Cloud ECI docs, "Specify vCPU and memory to create an instance").
var soldSpecs = func() []Spec {
	table := map[float64][]float64{
		0.25: {0.5, 1},
		0.5:  {1, 2},
		1:    {2, 4, 8},
		2:    {1, 2, 4, 8, 16},
		4:    {2, 4, 8, 16, 32},
		8:    {4, 8, 16, 32, 64},
		12:   {12, 24, 48, 96},
		16:   {16, 32, 64, 128},
		24:   {24, 48, 96, 192},
		32:   {32, 64, 128, 256},
		52:   {96, 192, 384},
		64:   {128, 256, 512},
	}
	var out []Spec
	for cpu, mems := range table {
		for _, m := range mems {
			out = append(out, Spec{CPU: cpu, MemoryGi: m})
		}
	}
	// Cheapest first: fewer vCPUs, then less memory.
	sort.Slice(out, func(i, j int) bool {
		if out[i].CPU != out[j].CPU {
			return out[i].CPU < out[j].CPU
		}
		return out[i].MemoryGi < out[j].MemoryGi
	})
	return out
}()

// DefaultSpec is what ECI creates when a pod asks for nothing.
var DefaultSpec = Spec{CPU: 2, MemoryGi: 4}

// RoundUp returns the smallest sold spec with at least cpu vCPU and memGi
// GiB, as ECI itself rounds; ok is false when even the largest is too small.
func RoundUp(cpu, memGi float64) (Spec, bool) {
	const eps = 1e-9
	for _, s := range soldSpecs {
		if s.CPU+eps >= cpu && s.MemoryGi+eps >= memGi {
			return s, true
		}
	}
	return Spec{}, false
}

// MaxSpec is the largest sold shape, for error messages.
func MaxSpec() Spec {
	best := soldSpecs[0]
	for _, s := range soldSpecs {
		if s.CPU > best.CPU || (s.CPU == best.CPU && s.MemoryGi > best.MemoryGi) {
			best = s
		}
	}
	return best
}
