"""Instances of a class of the program as arguments: depends=[Reading] ships the class,
job.id is set to the argument object and job.stdout holds what the job printed."""

import json


class Reading:
    def __init__(self, sensor, value):
        self.sensor = sensor
        self.value = value

    def report(self):
        print("sensor %s reads %.1f" % (self.sensor, self.value))


def compute(reading):
    reading.report()
    return reading.value * 10


if __name__ == "__main__":
    import dispy

    cluster = dispy.JobCluster(compute, depends=[Reading])
    jobs = []
    for k in range(5):
        reading = Reading("s%d" % k, k + 0.5)
        job = cluster.submit(reading)
        job.id = reading  # any object serves as the job's id
        jobs.append(job)
    for job in jobs:
        job()
        print("RESULT", json.dumps({"sensor": job.id.sensor, "value": job.id.value,
                                    "result": job.result, "stdout": job.stdout}))
    cluster.close()
