package cli

import (
	"bytes"
	"flag"

	"github.com/sirupsen/logrus"
	"k8s.io/klog/v2"
)

// RouteKlog sends client-go's klog lines through logger, so a binary's
// output has one format: each line at its own severity (I, W, E, F),
// klog's header dropped, marked source=client-go. klog is process-wide,
// so only a main calls this, once.
func RouteKlog(logger *logrus.Logger) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	_ = fs.Set("logtostderr", "false")
	_ = fs.Set("alsologtostderr", "false")
	_ = fs.Set("stderrthreshold", "FATAL")
	_ = fs.Set("one_output", "true") // each line once, not again at every lower severity
	klog.SetOutput(klogWriter{logrus.NewEntry(logger).WithField("source", "client-go")})
}

type klogWriter struct{ log *logrus.Entry }

// Write takes one klog line: "Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg".
func (w klogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	msg := line
	if i := bytes.Index(line, []byte("] ")); i >= 0 {
		msg = line[i+2:]
	}
	level := logrus.InfoLevel
	if len(line) > 0 {
		switch line[0] {
		case 'W':
			level = logrus.WarnLevel
		case 'E', 'F':
			level = logrus.ErrorLevel
		}
	}
	w.log.Log(level, string(msg))
	return len(p), nil
}
