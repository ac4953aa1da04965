package translate

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/vnode-project/vnode/eci/model"
)

type dockerConfigEntry struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Auth     string `json:"auth"`
}

// RegistryCredentials reads the pod's imagePullSecrets
// (kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg). A missing
// secret is skipped, as the kubelet does (the pull may still succeed for
// public images); a malformed one is refused.
func RegistryCredentials(pod *corev1.Pod, objs Objects) ([]model.RegistryCredential, error) {
	seen := map[string]bool{}
	var out []model.RegistryCredential
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, err := objs.Secret(pod.Namespace, ref.Name)
		if err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("reading image pull secret %s/%s: %w", pod.Namespace, ref.Name, err)
		}
		var entries map[string]dockerConfigEntry
		switch s.Type {
		case corev1.SecretTypeDockerConfigJson:
			var cfg struct {
				Auths map[string]dockerConfigEntry `json:"auths"`
			}
			if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
				return nil, unsupported("InvalidImagePullSecret", "image pull secret %s/%s: %s is not valid JSON", pod.Namespace, ref.Name, corev1.DockerConfigJsonKey)
			}
			entries = cfg.Auths
		case corev1.SecretTypeDockercfg:
			if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &entries); err != nil {
				return nil, unsupported("InvalidImagePullSecret", "image pull secret %s/%s: %s is not valid JSON", pod.Namespace, ref.Name, corev1.DockerConfigKey)
			}
		default:
			return nil, unsupported("InvalidImagePullSecret", "image pull secret %s/%s has type %q; want %s or %s", pod.Namespace, ref.Name, s.Type, corev1.SecretTypeDockerConfigJson, corev1.SecretTypeDockercfg)
		}
		servers := make([]string, 0, len(entries))
		for server := range entries {
			servers = append(servers, server)
		}
		sort.Strings(servers)
		for _, server := range servers {
			e := entries[server]
			user, pass := e.Username, e.Password
			if user == "" && e.Auth != "" {
				dec, err := base64.StdEncoding.DecodeString(e.Auth)
				if err != nil {
					return nil, unsupported("InvalidImagePullSecret", "image pull secret %s/%s: auth for %s is not base64", pod.Namespace, ref.Name, server)
				}
				user, pass, _ = strings.Cut(string(dec), ":")
			}
			host := registryHost(server)
			if user == "" || seen[host] {
				continue
			}
			seen[host] = true
			out = append(out, model.RegistryCredential{Server: host, UserName: user, Password: pass})
		}
	}
	return out, nil
}

// registryHost strips a scheme and path: "https://index.docker.io/v1/" is
// "index.docker.io".
func registryHost(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	host, _, _ := strings.Cut(s, "/")
	return host
}
