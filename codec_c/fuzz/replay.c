/*
 * replay.c - runs the fuzz target over files without libFuzzer, so CI
 * replays the seed corpus, the golden files and every regression seed
 * under ASan + UBSan (`make fuzz-replay`).
 *
 *   replay PATH...     each PATH a file or a directory (not recursive)
 *
 * Each input is copied into a heap buffer of exactly its size, so an
 * over-read is caught by the sanitizer.  Exits non-zero when a path
 * cannot be read or nothing was replayed; a failed property aborts.
 */
#define _DEFAULT_SOURCE 1
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long n;
    if (!f) return 0;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return 0;
    }
    buf = (uint8_t *)malloc(n ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return 0;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(buf, (size_t)n);
    free(buf);
    return 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    unsigned long files = 0;
    int i;
    if (argc < 2) {
        fprintf(stderr, "usage: replay PATH...\n");
        return 2;
    }
    for (i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: cannot stat %s\n", argv[i]);
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            DIR *d = opendir(argv[i]);
            struct dirent *e;
            char **names = NULL;
            size_t n = 0, cap = 0, k;
            if (!d) return 1;
            while ((e = readdir(d)) != NULL) {
                char path[4096], **p;
                struct stat fst;
                snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
                if (e->d_name[0] == '.' || stat(path, &fst) != 0 || !S_ISREG(fst.st_mode)) continue;
                if (n == cap) {
                    cap = cap ? 2 * cap : 64;
                    p = (char **)realloc(names, cap * sizeof(*names));
                    if (!p) return 1;
                    names = p;
                }
                names[n] = (char *)malloc(strlen(path) + 1);
                if (!names[n]) return 1;
                strcpy(names[n++], path);
            }
            closedir(d);
            if (n) qsort(names, n, sizeof(*names), by_name); /* a stable order */
            for (k = 0; k < n; k++) {
                if (!replay_file(names[k])) {
                    fprintf(stderr, "replay: cannot read %s\n", names[k]);
                    return 1;
                }
                files++;
                free(names[k]);
            }
            free(names);
        } else {
            if (!replay_file(argv[i])) {
                fprintf(stderr, "replay: cannot read %s\n", argv[i]);
                return 1;
            }
            files++;
        }
    }
    printf("replay: %lu inputs, no failure\n", files);
    return files ? 0 : 1;
}
