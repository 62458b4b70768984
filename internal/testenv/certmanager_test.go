package testenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCertManagerVersionIsHackCertmanagersPin(t *testing.T) {
	v, err := CertManagerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v != "v1.11.5" {
		t.Errorf("CertManagerVersion() = %q, want v1.11.5, the last release whose main module holds cmd/controller", v)
	}
}

func TestMissingCertManagerFailsNamingTheMakeTarget(t *testing.T) {
	dir := t.TempDir()
	err := CheckCertManager(dir)
	if err == nil {
		t.Fatal("an empty folder passed the check")
	}
	for _, want := range []string{dir, CertManagerController, "CRDs", "make cert-manager", CertManagerEnv} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}

	if err := os.WriteFile(filepath.Join(dir, CertManagerController), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := CheckCertManager(dir); err == nil || strings.Contains(err.Error(), "executable") || !strings.Contains(err.Error(), "CRDs") {
		t.Errorf("a folder with the controller and no CRDs: %v, want only the CRDs named", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "crds"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "crds", "crd-certificates.yaml"), []byte("kind: CustomResourceDefinition\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckCertManager(dir); err != nil {
		t.Errorf("a complete folder: %v", err)
	}
}

func TestCertManagerDirFollowsTheEnvironment(t *testing.T) {
	t.Setenv(CertManagerEnv, "/somewhere/cert-manager")
	if dir, err := CertManagerDir(); err != nil || dir != "/somewhere/cert-manager" {
		t.Errorf("CertManagerDir() = %q, %v; want $%s", dir, err, CertManagerEnv)
	}
	t.Setenv(CertManagerEnv, "")
	dir, err := CertManagerDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join("bin", "cert-manager", "v1.11.5-"); !strings.Contains(dir, want) {
		t.Errorf("CertManagerDir() = %q, want the folder make cert-manager fills (%s<os>-<arch>)", dir, want)
	}
}
