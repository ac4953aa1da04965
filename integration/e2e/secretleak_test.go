package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vnode-project/vnode/eci"
	"github.com/vnode-project/vnode/eci/model"
	"github.com/vnode-project/vnode/provider"
	"github.com/vnode-project/vnode/provider/vnode"
)

// wrongSecretOnCreate is the node's cloud, except that instances are
// created with a wrong AccessKey secret (a secret rotated under the node):
// the node starts and lists fine, and creating a pod's instance fails.
type wrongSecretOnCreate struct {
	provider.Cloud
	bad *eci.Client
}

func (w wrongSecretOnCreate) CreateContainerGroup(ctx context.Context, g *model.ContainerGroup) (string, string, error) {
	return w.bad.CreateContainerGroup(ctx, g)
}

// Issue 12 item 3, on the real control plane: with a wrong AccessKey
// secret ECI's SignatureDoesNotMatch quotes the string it signed, and the
// provider puts the error in a Warning event that anyone with view in the
// namespace reads. The event names the code and the request id, and not
// the value the pod's env took from a Secret.
func TestWrongSecretEventDoesNotLeakSecretValues(t *testing.T) {
	const secretValue = "DbPassw0rdFromSecret8841"
	e := newEnv(t, "sim")
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	bad, err := eci.New(eci.Config{RegionID: "cn-hangzhou", Endpoint: "http://" + e.ep, AccessKeyID: akID, AccessKeySecret: "rotated-away",
		Logger: logger, Retry: eci.RetryPolicy{Attempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	n := e.startNodeWith(t, "vn-leak", nil, func(o *vnode.Options) { o.Cloud = wrongSecretOnCreate{Cloud: o.Cloud, bad: bad} })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := e.cp.Client
	if err := e.cp.CreateNamespace(ctx, "leak"); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "leak"}, StringData: map[string]string{"password": secretValue}}
	if _, err := c.CoreV1().Secrets("leak").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "leak"},
		Spec: corev1.PodSpec{NodeName: n.name, Tolerations: []corev1.Toleration{vkToleration()}, Containers: []corev1.Container{{
			Name: "c", Image: "busybox", Env: []corev1.EnvVar{{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}}}}}}
	if _, err := c.CoreV1().Pods("leak").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var msg string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		evs, err := c.CoreV1().Events("leak").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=app"})
		if err != nil {
			return false, nil
		}
		for _, ev := range evs.Items {
			if ev.Type == corev1.EventTypeWarning && strings.Contains(ev.Message, "SignatureDoesNotMatch") {
				msg = ev.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatal("no Warning event about the refused signature on the pod")
	}
	if strings.Contains(msg, secretValue) {
		t.Fatalf("the pod's event quotes the Secret's value:\n%s", msg)
	}
	if !regexp.MustCompile(`request [0-9A-F]{8}-[0-9A-F]{4}-`).MatchString(msg) {
		t.Errorf("the event has no request id: %s", msg)
	}
	got, err := c.CoreV1().Pods("leak").Get(ctx, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(got.Status.Message, secretValue) {
		t.Errorf("the pod's status quotes the Secret's value: %s", got.Status.Message)
	}
}
