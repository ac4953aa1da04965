package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

func TestStart(t *testing.T) {
	ctx, stop, logger, err := Start(context.Background(), "warn")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if logger.GetLevel() != logrus.WarnLevel || ctx.Err() != nil {
		t.Fatalf("level %s, ctx %v", logger.GetLevel(), ctx.Err())
	}
	stop()
	if ctx.Err() == nil {
		t.Fatal("stop did not end the context")
	}
	if _, _, _, err := Start(context.Background(), "loud"); err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("a bad level: %v", err)
	}
}
