/*
 * cli_outputs — the commands' output files.
 *
 * Before any work, every output path is checked (cli_check_output_path): its directory must
 * exist and be writable, and an existing file there must be a regular file; a directory, a
 * device node (/dev/null, /dev/full), a FIFO or a socket is refused (exit 2). A symbolic link is
 * followed: the file it names is the one replaced (written beside it, renamed onto it), and the
 * link stays; a link to a missing file is refused. cli_check_distinct then refuses (exit 2) two
 * outputs, or an output and an input, that are the same file: the same device and inode, or,
 * for files still to be created, the same resolved name.
 *
 * Each output is written in full under a temporary name beside its target
 * (cli_outputs_add) and all are renamed into place together at the end (cli_outputs_commit).
 * If a rename fails, the files already renamed are put back as they were: the user's previous
 * files at those paths survive a failed run.
 */
#ifndef NABLACL_TOOLS_CLI_OUTPUTS_H
#define NABLACL_TOOLS_CLI_OUTPUTS_H

#include <stddef.h>

#include "npy.h"

#define CLI_MAX_OUTPUTS 8

/** Files written under temporary names, renamed into place together by cli_outputs_commit. */
typedef struct {
  int count;
  char *target[CLI_MAX_OUTPUTS]; /* the file replaced: the path with symbolic links followed */
  char *temp[CLI_MAX_OUTPUTS];
} cli_outputs;

/** A file named on the command line: its option (for messages) and its path (NULL: absent). */
typedef struct {
  const char *opt, *path;
} cli_named_file;

/** Checks before any work that `path` can become a regular file (see above). 0 or an exit code
 * (printed). */
int cli_check_output_path(const char *opt, const char *path);
/** Exit 2 (printed) when two outputs, or an output and an input, are the same file. */
int cli_check_distinct(const cli_named_file *outputs, int n_outputs, const cli_named_file *inputs,
                       int n_inputs);
/** Writes an array to a temp file next to `path` (its target, links followed); 0 or
 * CLI_EXIT_RUNTIME (printed). */
int cli_outputs_add(cli_outputs *set, const char *opt, const char *path, npy_dtype dtype,
                    int ndim, const size_t *shape, const void *data);
/** The file an output path names (symbolic links followed; the path itself where it cannot be
 * resolved), malloc'd; NULL when out of memory. A writer that makes its own temp file writes it
 * beside this file, then hands it to cli_outputs_adopt. */
char *cli_output_target(const char *path);
/** Takes over a temp file already written beside cli_output_target(path) (the set frees `temp`,
 * also on failure, which removes it). 0 or CLI_EXIT_RUNTIME (printed). */
int cli_outputs_adopt(cli_outputs *set, const char *opt, const char *path, char *temp);
/** Renames every temp onto its target; on failure puts back what was at the targets before.
 * 0 or CLI_EXIT_RUNTIME (printed). */
int cli_outputs_commit(cli_outputs *set);
/** Removes uncommitted temps and frees the set (safe after commit, and on a zeroed set). */
void cli_outputs_discard(cli_outputs *set);

#endif
