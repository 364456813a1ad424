"""Flow control with a job_status callback and a threading.Condition: the program keeps
the number of jobs in flight between a lower and an upper bound instead of submitting
them all at once."""

import json


def compute(n):
    import time

    time.sleep(0.05)
    return n * n


def job_status(job):  # runs in the client, in dispy's callback thread
    if job.status in (dispy.DispyJob.Finished, dispy.DispyJob.Terminated,
                      dispy.DispyJob.Cancelled, dispy.DispyJob.Abandoned):
        with jobs_cond:
            results[job.id] = job.result
            in_flight.pop(job.id, None)
            job.result = None  # this program keeps results elsewhere
            if len(in_flight) <= lower_bound:
                jobs_cond.notify()


if __name__ == "__main__":
    import threading

    import dispy

    lower_bound, upper_bound = 3, 6
    jobs_cond = threading.Condition()
    in_flight, results = {}, {}
    most_in_flight, throttled = 0, 0
    cluster = dispy.JobCluster(compute, job_status=job_status)
    for i in range(40):
        job = cluster.submit(i)
        with jobs_cond:
            if job.id not in results:  # it may be done already
                in_flight[job.id] = job
            most_in_flight = max(most_in_flight, len(in_flight))
            if len(in_flight) >= upper_bound:
                throttled += 1
                while len(in_flight) > lower_bound:
                    jobs_cond.wait()
    cluster.wait()
    print("RESULT", json.dumps({"most_in_flight": most_in_flight, "throttled": throttled,
                                "results": results}))
    cluster.print_status()
    cluster.close()
