package kernelvm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrVMTimeout is returned when a VM did not power off within its timeout.
var ErrVMTimeout = errors.New("kernel VM timed out")

// VM is one boot of a kernel with an initramfs under qemu's TCG emulator
// (KVM is not usable on the development and CI machines).
type VM struct {
	Kernel    string        // bzImage
	Initramfs string        // cpio archive
	MemoryMiB int           // guest memory
	CPUs      int           // guest CPUs
	Timeout   time.Duration // hard limit; the VM is killed after it
	Shell     bool          // interactive: serial console on the terminal
	BootLog   bool          // print the kernel's boot messages (no "quiet"; slower)
	Append    []string      // extra kernel command-line arguments
}

// qemuArgs returns qemu's command line.
func (vm VM) qemuArgs() []string {
	cmdline := []string{"console=ttyS0", "panic=-1", "rdinit=/init", "random.trust_cpu=on"}
	if !vm.BootLog {
		cmdline = append(cmdline, "quiet")
	}
	if vm.Shell {
		cmdline = append(cmdline, "kfm.shell=1")
	}
	cmdline = append(cmdline, vm.Append...)
	serial := "stdio"
	if vm.Shell {
		serial = "mon:stdio" // Ctrl-A X quits, Ctrl-A C is the monitor
	}
	return []string{
		// One TCG thread for all vCPUs: multi-threaded TCG crashed
		// guests in bpf_dispatcher_xdp_func (int3 from a racing text
		// poke) during dispatcher swaps, and single-threaded TCG was no
		// slower on this 2-core host with two VMs running side by side.
		"-accel", "tcg,thread=single", "-cpu", "max",
		"-smp", strconv.Itoa(vm.CPUs), "-m", strconv.Itoa(vm.MemoryMiB),
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
		"-serial", serial,
		"-kernel", vm.Kernel, "-initrd", vm.Initramfs,
		"-append", strings.Join(cmdline, " "),
	}
}

// qemuBinary finds qemu-system-x86_64.
func qemuBinary() (string, error) {
	p, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return "", fmt.Errorf("qemu-system-x86_64 not found (install qemu-system-x86: make deps): %w", err)
	}
	return p, nil
}

// Run boots the VM and feeds every console line, with the host time it
// arrived, to line. It returns when qemu exits: nil after a clean power
// off, ErrVMTimeout when the timeout killed it, or qemu's failure with its
// error output.
func (vm VM) Run(ctx context.Context, line func(time.Time, string)) error {
	qemu, err := qemuBinary()
	if err != nil {
		return err
	}
	if vm.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, vm.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, qemu, vm.qemuArgs()...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if vm.Shell {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start qemu: %w", err)
	}
	r := bufio.NewReaderSize(out, 64<<10)
	for {
		s, err := r.ReadString('\n')
		if s != "" {
			line(time.Now(), s)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				line(time.Now(), "(console read error: "+err.Error()+")")
			}
			break
		}
	}
	err = cmd.Wait()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%w after %s", ErrVMTimeout, vm.Timeout)
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("qemu: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
