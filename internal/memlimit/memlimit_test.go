package memlimit

import (
	"testing"
	"testing/fstest"
)

func TestLimit(t *testing.T) {
	v2 := fstest.MapFS{
		"proc/self/cgroup":                          {Data: []byte("0::/kubepods/pod1/c1\n")},
		"sys/fs/cgroup/kubepods/pod1/c1/memory.max": {Data: []byte("335544320\n")},
	}
	v2ns := fstest.MapFS{ // the container's own cgroup namespace
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("104857600\n")},
	}
	v2max := fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("max\n")},
	}
	v1 := fstest.MapFS{
		"proc/self/cgroup": {Data: []byte("5:devices:/x\n4:memory:/docker/abc\n0::/\n")},
		// Mounted at the container's own group: the host path is absent.
		"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("209715200\n")},
	}
	v1none := fstest.MapFS{
		"proc/self/cgroup":                           {Data: []byte("4:memory:/\n")},
		"sys/fs/cgroup/memory/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
	}
	garbage := fstest.MapFS{
		"proc/self/cgroup":         {Data: []byte("0::/\n")},
		"sys/fs/cgroup/memory.max": {Data: []byte("lots\n")},
	}
	for _, tc := range []struct {
		name, flag string
		root       fstest.MapFS
		want       int64
		wantErr    bool
	}{
		{"auto, cgroup v2 (320Mi: the limit less 64Mi)", "auto", v2, 335544320 - 64<<20, false},
		{"auto, cgroup v2 namespace (100Mi: half)", "auto", v2ns, 104857600 / 2, false},
		{"auto, cgroup v2 without a limit", "auto", v2max, 0, false},
		{"auto, cgroup v1 (200Mi: the limit less 64Mi)", "auto", v1, 209715200 - 64<<20, false},
		{"auto, cgroup v1 without a limit", "auto", v1none, 0, false},
		{"auto, not Linux", "auto", fstest.MapFS{}, 0, false},
		{"auto, unreadable limit", "auto", garbage, 0, true},
		{"explicit", "270Mi", v2, 270 << 20, false},
		{"none", "0", v2, 0, false},
		{"bad quantity", "lots", v2, 0, true},
		{"negative", "-1Gi", v2, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := Limit(tc.flag, tc.root)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("Limit(%q) = %d, %v; want %d, error %v", tc.flag, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestCgroups(t *testing.T) {
	root := fstest.MapFS{"proc/self/cgroup": {Data: []byte("9:name=systemd:/\n4:cpu,memory:/docker/abc\n3:cpuset:/\n0::/user.slice/x\n")}}
	got, err := Cgroups(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Cgroup{{Path: "/docker/abc"}, {V2: true, Path: "/user.slice/x"}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("Cgroups = %+v, want %+v", got, want)
	}
	for c, dir := range map[Cgroup]string{
		got[0]: "sys/fs/cgroup/memory/docker/abc", got[1]: "sys/fs/cgroup/user.slice/x", {V2: true, Path: "/"}: "sys/fs/cgroup",
	} {
		if c.Dir() != dir {
			t.Errorf("%+v: Dir %q, want %q", c, c.Dir(), dir)
		}
	}
	if got[0].LimitFile() != "memory.limit_in_bytes" || got[1].LimitFile() != "memory.max" {
		t.Errorf("limit files %q, %q", got[0].LimitFile(), got[1].LimitFile())
	}
	if got, err := Cgroups(fstest.MapFS{}); err != nil || got != nil {
		t.Fatalf("not Linux: %v, %v", got, err)
	}
}

// auto gives the Go heap 90% of a large limit, and leaves at least 64 MiB
// for the binary's pages under a small one.
func TestAutoLimit(t *testing.T) {
	for _, tc := range []struct{ limit, want int64 }{
		{2 << 30, 1932735283}, // 90%
		{320 << 20, 256 << 20},
		{100 << 20, 50 << 20},
	} {
		if got := autoLimit(tc.limit); got != tc.want {
			t.Errorf("autoLimit(%d MiB) = %d MiB, want %d MiB", tc.limit>>20, got>>20, tc.want>>20)
		}
	}
}
