package model

import "testing"

func TestRoundUp(t *testing.T) {
	cases := []struct {
		cpu, mem float64
		want     string
		ok       bool
	}{
		{0, 0, "0.25-0.5Gi", true},
		{0.1, 0.1, "0.25-0.5Gi", true},
		{0.25, 0.75, "0.25-1Gi", true},
		{0.3, 0.5, "0.5-1Gi", true},
		{1, 3, "1-4Gi", true},
		{2, 3, "2-4Gi", true}, // the vendor doc's 2c/3G -> 2c/4G
		{7, 13, "8-16Gi", true},
		{1, 9, "2-16Gi", true},
		{4, 33, "8-64Gi", true},
		{64, 512, "64-512Gi", true},
		{65, 1, "", false},
		{1, 600, "", false},
	}
	for _, c := range cases {
		got, ok := RoundUp(c.cpu, c.mem)
		if ok != c.ok || (ok && got.String() != c.want) {
			t.Errorf("RoundUp(%v, %v) = %v, %v; want %s, %v", c.cpu, c.mem, got, ok, c.want, c.ok)
		}
	}
	if MaxSpec().String() != "64-512Gi" {
		t.Errorf("max spec %v", MaxSpec())
	}
}
