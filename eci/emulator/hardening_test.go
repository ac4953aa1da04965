package emulator

import (
	"bytes"
	"encoding/base64"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sdkeci "github.com/aliyun/alibaba-cloud-sdk-go/services/eci"
)

// A secret volume's files and a container's log are the emulator user's
// alone (0600, in 0700 directories) even when DataDir is world-readable
// and the umask lets everyone read what is created: another local user
// must not read a pod's secrets or what it printed.
func TestSecretVolumeFilesAndLogsArePrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, ep := startForTest(t, Config{Credentials: map[string]string{testID: testSecret}, Runtime: "process", DataDir: dir})
	c := sdkClient(t, ep, testID, testSecret)
	req := createRequest("private", "tok-private")
	req.RestartPolicy = "Never"
	(*req.Container)[0].Command = []string{"/bin/sh", "-c", "echo printed-secret"}
	(*req.Container)[0].VolumeMount = &[]sdkeci.CreateContainerGroupVolumeMount{{Name: "creds", MountPath: "/creds"}}
	req.Volume = &[]sdkeci.CreateContainerGroupVolume{{Name: "creds", Type: "ConfigFileVolume",
		ConfigFileVolume: sdkeci.CreateContainerGroupConfigFileVolume{ConfigFileToPath: &[]sdkeci.CreateContainerGroupConfigFileToPath{
			{Path: "sub/password", Content: base64.StdEncoding.EncodeToString([]byte("s3cret"))}}}}}
	r, err := c.CreateContainerGroup(req)
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, "http", r.ContainerGroupId, "Succeeded")
	sandbox := filepath.Join(dir, "sandboxes", r.ContainerGroupId)
	for path, want := range map[string]os.FileMode{
		filepath.Join(sandbox, "volumes", "creds", "sub", "password"): 0o600,
		filepath.Join(sandbox, "volumes", "creds", "sub"):             0o700,
		filepath.Join(sandbox, "logs", "app.log"):                     0o600,
		filepath.Join(sandbox, "logs"):                                0o700,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(sandbox, "volumes", "creds", "sub", "password")); string(b) != "s3cret" {
		t.Errorf("volume file holds %q", b)
	}
}

// A file an older emulator left readable becomes private when written again.
func TestPrivateFileNarrowsAnExistingMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := writeFileMode(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{p: 0o600, dir: 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %v", path, fi.Mode().Perm(), err, want)
		}
	}
}

// Signatures and the admin token are compared in constant time: == stops
// at the first differing byte, and the time it takes tells an attacker how
// much of a guess is right. Timing cannot be asserted in a test, so this
// reads the package's source: no == or != may have a signature, the
// Authorization header, the admin token or another token on one side (a
// check for empty, or of a key against a literal, aside).
func TestSecretsAreComparedInConstantTime(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	secretish := []string{"sign(", `"Signature"`, "AdminToken", `"Authorization"`, "token"}
	text := func(n ast.Node) string {
		var b bytes.Buffer
		_ = printer.Fprint(&b, fset, n)
		return b.String()
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			be, ok := n.(*ast.BinaryExpr)
			if !ok || (be.Op != token.EQL && be.Op != token.NEQ) {
				return true
			}
			for _, side := range [][2]ast.Expr{{be.X, be.Y}, {be.Y, be.X}} {
				s, other := text(side[0]), text(side[1])
				if _, lit := side[0].(*ast.BasicLit); lit || other == `""` || strings.Contains(s, "subtle.ConstantTimeCompare") || strings.Contains(s, "hmac.Equal") {
					continue
				}
				for _, w := range secretish {
					if strings.Contains(s, w) {
						t.Errorf("%s: %s compares a secret with %s; use crypto/subtle", fset.Position(be.Pos()), text(be), be.Op)
						return true
					}
				}
			}
			return true
		})
	}
}
