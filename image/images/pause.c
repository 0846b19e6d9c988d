/*
 * The sandbox ("pause") process of every pod: it holds the pod's
 * namespaces, reaps zombies if it is PID 1 of a shared PID namespace, and
 * exits on SIGINT or SIGTERM. Muster's own equivalent of Kubernetes'
 * build/pause/linux/pause.c, built statically into the node image (nothing
 * is pulled from a registry).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
    (void)sig;
    _exit(0);
}

static void on_child(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("muster-pause 3.9");
        return 0;
    }
    if (getpid() != 1) {
        fprintf(stderr, "pause: not PID 1 of its namespace; it still waits\n");
    }
    struct sigaction stop = {.sa_handler = on_stop};
    struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
    if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
        sigaction(SIGCHLD, &child, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
}
